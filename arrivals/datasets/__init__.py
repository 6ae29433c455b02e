"""Prompt datasets (ShareGPT, Alpaca, any Hugging Face dataset or local file, custom JSONL),
one reader per file, and :func:`dataset_workload`, which sends them on an arrival process.

Lengths. ``input_tokens`` is the prompt's token count with the tokenizer in use, else the
whitespace-word count (an estimate on real tokenizers, exact on the reference simulator).
``output_tokens`` (max_tokens) is, in order of precedence: the fixed ``output_len``; the
item's own ``output_len`` (custom JSONL); the token (or word) count of the item's reference
answer; else ``default_output_len``. The description records which method counted tokens
and how many items used each source of output length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from arrivals.datasets._common import DatasetError, DatasetItems, count_tokens, word_count
from arrivals.datasets.alpaca import read_alpaca
from arrivals.datasets.hf import parse_hf_columns, read_hf
from arrivals.datasets.jsonl import read_jsonl_prompts
from arrivals.datasets.sharegpt import read_sharegpt
from arrivals.processes import schedule
from arrivals.workload import Workload

DATASETS = ("sharegpt", "alpaca", "hf", "jsonl")


def load_dataset_items(
    name: str,
    path: str | Path,
    *,
    multi_turn: bool = False,
    hf_split: str = "train",
    hf_columns: Mapping[str, str] | None = None,
) -> DatasetItems:
    """Read dataset ``name`` (one of DATASETS) from ``path`` (or a hub name for ``hf``)."""
    if name == "sharegpt":
        return read_sharegpt(path, multi_turn=multi_turn)
    if name == "alpaca":
        return read_alpaca(path)
    if name == "jsonl":
        return read_jsonl_prompts(path)
    if name == "hf":
        return read_hf(path, split=hf_split, columns=hf_columns)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def _order(n_items: int, n: int, seed: int) -> tuple[np.ndarray, int]:
    """Indices of ``n`` items: a seeded permutation, repeated (re-permuted) if n > n_items."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7A]))
    reps = math.ceil(n / n_items)
    idx = np.concatenate([rng.permutation(n_items) for _ in range(reps)])[:n]
    return idx, reps


def dataset_workload(
    items: DatasetItems,
    *,
    num_requests: int | None = None,
    request_rate: float = math.inf,
    process: str = "poisson",
    burstiness: float = 1.0,
    output_len: int | None = None,
    default_output_len: int = 128,
    token_counter: Callable[[str], int] | None = None,
    token_counter_name: str = "words",
    seed: int = 0,
) -> Workload:
    """``num_requests`` dataset prompts (default: each item once) sent by an arrival process.

    Items are drawn as a seeded permutation of the dataset (repeated when more requests than
    items are asked for), so the same seed sends the same prompts in the same order.
    """
    n_items = len(items)
    n = num_requests or n_items
    idx, reps = _order(n_items, n, seed)
    prompts = [items.prompts[i] for i in idx.tolist()]
    counter = token_counter or word_count
    inp = np.maximum(count_tokens(prompts, counter), 1)
    out = np.empty(n, dtype=np.int64)
    src = {"fixed": 0, "item_output_len": 0, "reference": 0, "default": 0}
    ref_cache: dict[int, int] = {}
    for k, i in enumerate(idx.tolist()):
        own = items.output_lens[i] if items.output_lens is not None else None
        ref = items.references[i]
        if output_len is not None:
            out[k], key = output_len, "fixed"
        elif own is not None:
            out[k], key = own, "item_output_len"
        elif ref is not None and ref.strip():
            if i not in ref_cache:
                ref_cache[i] = max(1, counter(ref))
            out[k], key = ref_cache[i], "reference"
        else:
            out[k], key = default_output_len, "default"
        src[key] += 1
    t = schedule(process, request_rate, n, burstiness=burstiness, seed=seed)
    desc: dict[str, Any] = {
        "kind": "dataset",
        "dataset": items.name,
        "dataset_path": items.source,
        "dataset_items": n_items,
        "dataset_info": items.info,
        "num_requests": n,
        "repeated_passes": reps,
        "process": process,
        "request_rate": request_rate,
        "burstiness": burstiness,
        "seed": seed,
        "token_count": token_counter_name,
        "output_len_source": src,
        "output_len_fixed": output_len,
        "prompt_text": f"{items.name} prompts as in the dataset (no chat template)",
    }
    return Workload(t_intended=t, prompts=prompts, input_tokens=inp, output_tokens=out,
                    dataset=items.name,
                    item_ids=[items.item_ids[i] for i in idx.tolist()], description=desc)


__all__ = [
    "DATASETS", "DatasetError", "DatasetItems", "dataset_workload", "load_dataset_items",
    "parse_hf_columns", "read_alpaca", "read_hf", "read_jsonl_prompts", "read_sharegpt",
]
