"""Streaming JSONL records with line numbers, shared by the JSONL readers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from arrivals.traces._csv import open_text
from arrivals.traces.trace import TraceFormatError


def json_lines(path: str | Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line; each object must have the ``required`` keys."""
    open_text(path).close()  # a missing file: the same message as the CSV readers
    with open(path, "rb") as f:  # bytes: orjson checks the UTF-8 (and names the line below)
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                rec = orjson.loads(text)
            except orjson.JSONDecodeError as e:
                raise TraceFormatError(path, line, None, f"not valid JSON or not UTF-8 ({e}); "
                                       "expected one JSON object per line") from None
            if not isinstance(rec, dict):
                raise TraceFormatError(path, line, None, "expected a JSON object per line")
            for k in required:
                if k not in rec:
                    raise TraceFormatError(path, line, k, f"missing key; the line has keys "
                                           f"{sorted(rec)}")
            yield line, rec
