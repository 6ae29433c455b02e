"""Any Hugging Face dataset, by hub name or local file, through the ``datasets`` library.

``columns`` maps our fields to the dataset's columns: ``prompt`` (required) and ``output``
(optional, the reference answer whose length gives the output length). A local file
(``.json``, ``.jsonl``, ``.csv``, ``.parquet``, ``.txt``) is loaded with the matching builder
(``load_dataset("json", data_files=PATH)``), which works offline; anything else is taken as a
hub name (``load_dataset(NAME, split=SPLIT)``), which needs the hub or its local cache.
Needs the optional dependency ``datasets`` (``pip install 'llm-loadgen[datasets]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from arrivals.datasets._common import DatasetError, DatasetItems

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet",
             ".txt": "text"}


def parse_hf_columns(spec: str) -> dict[str, str]:
    """``"prompt=question,output=answer"`` -> {"prompt": "question", "output": "answer"}."""
    out: dict[str, str] = {}
    for part in spec.split(","):
        k, sep, v = part.partition("=")
        k, v = k.strip(), v.strip()
        if not sep or k not in ("prompt", "output") or not v:
            raise ValueError(f"bad column mapping {part!r}: expected prompt=COL[,output=COL]")
        out[k] = v
    return out


def read_hf(
    name_or_path: str | Path,
    *,
    split: str = "train",
    columns: Mapping[str, str] | None = None,
) -> DatasetItems:
    """Prompts (and reference answers) of a hub dataset or a local data file."""
    cols = dict(columns or {"prompt": "prompt"})
    if "prompt" not in cols:
        raise ValueError("the column mapping needs prompt=COL")
    try:
        import datasets
    except ImportError:
        raise DatasetError(name_or_path, "the 'datasets' package is not installed; "
                           "pip install 'llm-loadgen[datasets]'") from None
    p = Path(name_or_path)
    try:
        if p.suffix.lower() in _BUILDERS or p.is_file():
            if not p.is_file():
                raise DatasetError(p, "no such file")
            ds = datasets.load_dataset(_BUILDERS.get(p.suffix.lower(), "json"),
                                       data_files=str(p), split=split)
        elif p.is_dir():
            ds = datasets.load_dataset(str(p), split=split)
        else:
            ds = datasets.load_dataset(str(name_or_path), split=split)
    except DatasetError:
        raise
    except (ConnectionError, OSError, ValueError, FileNotFoundError, RuntimeError) as e:
        # datasets raises DatasetNotFoundError (a FileNotFoundError), ConnectionError or
        # ValueError (bad split) depending on the version and on whether the hub answered.
        raise DatasetError(name_or_path, f"could not load Hugging Face dataset "
                           f"(split {split!r}): {type(e).__name__}: {str(e)[:300]}. If the hub "
                           "is not reachable, download the data and pass a local file "
                           "(--dataset-path data.jsonl) or set HF_HUB_OFFLINE=1 to use the "
                           "cache") from None
    missing = [c for c in cols.values() if c not in ds.column_names]
    if missing:
        raise DatasetError(name_or_path, f"no column {missing[0]!r}; it has "
                           f"{', '.join(ds.column_names)}; map them with --hf-columns "
                           "prompt=COL,output=COL")
    prompts = [str(x) for x in ds[cols["prompt"]]]
    refs = [None if x is None else str(x) for x in ds[cols["output"]]] if "output" in cols \
        else [None] * len(prompts)
    keep = [i for i, x in enumerate(prompts) if x.strip()]
    if not keep:
        raise DatasetError(name_or_path, f"column {cols['prompt']!r} has no non-empty prompt")
    return DatasetItems(name="hf", source=str(name_or_path), prompts=[prompts[i] for i in keep],
                        item_ids=[str(i) for i in keep], references=[refs[i] for i in keep],
                        info={"split": split, "columns": cols,
                              "skipped_empty": len(prompts) - len(keep)})
