"""Stanford Alpaca: a JSON array (or JSONL) of ``{"instruction", "input", "output"}``.

The prompt is the instruction, followed by a blank line and the input when the input is not
empty (the plain concatenation; no chat template is applied). The reference answer is
``output`` (Alpaca's ``<nooutput>`` answers are kept as they are).
"""

from __future__ import annotations

from pathlib import Path

from arrivals.datasets._common import DatasetError, DatasetItems, read_json_file


def read_alpaca(path: str | Path) -> DatasetItems:
    """Prompts and reference answers of an Alpaca JSON file, in file order."""
    p = Path(path)
    data = read_json_file(p)
    if not isinstance(data, list):
        raise DatasetError(p, "expected a JSON array of {instruction, input, output} (Alpaca)")
    prompts: list[str] = []
    refs: list[str | None] = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or not isinstance(rec.get("instruction"), str):
            raise DatasetError(p, "expected an object with a string 'instruction' (Alpaca "
                               "format)", item=i)
        inp = rec.get("input") or ""
        out = rec.get("output")
        if not isinstance(inp, str) or (out is not None and not isinstance(out, str)):
            raise DatasetError(p, "'input' and 'output' must be strings", item=i)
        prompts.append(rec["instruction"] + (f"\n\n{inp}" if inp.strip() else ""))
        refs.append(out)
    if not prompts:
        raise DatasetError(p, "empty dataset")
    return DatasetItems(name="alpaca", source=str(p), prompts=prompts,
                        item_ids=[str(i) for i in range(len(prompts))], references=refs,
                        info={"records": len(data),
                              "with_input": sum(1 for r in data if (r.get("input") or "").strip())})
