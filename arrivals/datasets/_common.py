"""What every prompt-dataset reader returns, and how its lengths are counted.

A reader returns :class:`DatasetItems`: one prompt per item, the item's source id, and the
reference answer text when the dataset has one (ShareGPT's gpt reply, Alpaca's output).
Lengths are counted later, with the tokenizer in use or by a whitespace-word estimate
(:func:`count_tokens`), so that the count method is recorded once for the whole workload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """A dataset could not be read; the message names the file (or dataset) and the item."""

    def __init__(self, source: str | Path, what: str, item: str | int | None = None):
        where = f"{source}" + (f" item {item}" if item is not None else "")
        super().__init__(f"{where}: {what}")
        self.source, self.item = str(source), item


@dataclass(frozen=True)
class DatasetItems:
    """Prompts of a dataset, in file order."""

    name: str  # sharegpt | alpaca | hf | jsonl
    source: str  # the file path or hub name
    prompts: list[str]
    item_ids: list[str]
    references: list[str | None]  # reference answer text (None when the item has none)
    output_lens: list[int | None] | None = None  # explicit output lengths (custom JSONL)
    info: dict[str, Any] = field(default_factory=dict)  # e.g. skipped item counts

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if len(self.item_ids) != n or len(self.references) != n:
            raise ValueError("dataset columns must have one row per prompt")
        if self.output_lens is not None and len(self.output_lens) != n:
            raise ValueError("dataset output_lens must have one row per prompt")

    def __len__(self) -> int:
        return len(self.prompts)


def word_count(text: str) -> int:
    """Whitespace words: exact on the reference simulator, ~0.75 of BPE tokens on English."""
    return len(text.split())


def count_tokens(texts: list[str], counter: Callable[[str], int] | None = None) -> np.ndarray:
    """Token count of each text with ``counter`` (a tokenizer), else the word estimate."""
    fn = counter or word_count
    return np.fromiter((fn(t) for t in texts), dtype=np.int64, count=len(texts))


def read_json_file(path: str | Path) -> Any:
    """Parse a whole JSON file; errors name the file and say what was expected."""
    import orjson

    p = Path(path)
    if not p.is_file():
        raise DatasetError(p, "no such file; pass the dataset file with --dataset-path")
    try:
        return orjson.loads(p.read_bytes())
    except orjson.JSONDecodeError as e:
        raise DatasetError(p, f"not valid JSON ({e}); expected a JSON array of records") from None
