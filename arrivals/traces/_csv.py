"""Streaming CSV rows with line numbers and a header check, shared by the CSV readers."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from arrivals.traces.trace import TraceFormatError


def open_text(path: str | Path):
    p = Path(path)
    if not p.is_file():
        raise TraceFormatError(p, None, None, "no such file; check the path given to --trace")
    # newline="" lets the csv module handle LF and CRLF (the Azure traces are CRLF).
    return p.open("r", encoding="utf-8", newline="")


def rows(path: str | Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row as {header: value}) for each data row; the header must name every
    column in ``required``. Lines are 1-based physical lines (header = line 1)."""
    with open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise TraceFormatError(path, 1, None, "empty file: expected a CSV header") from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise TraceFormatError(path, 1, None, f"unreadable CSV header: {e}") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise TraceFormatError(path, 1, None, f"header {header} lacks column(s) {missing}; "
                                   "is this the right --trace-format (or --trace-columns)?")
        n = len(header)
        try:
            for rec in reader:
                line = reader.line_num
                if not rec or (len(rec) == 1 and not rec[0].strip()):
                    continue
                if len(rec) != n:
                    raise TraceFormatError(path, line, None,
                                           f"expected {n} fields like the header, got {len(rec)}")
                yield line, dict(zip(header, rec, strict=True))
        except (csv.Error, UnicodeDecodeError) as e:
            raise TraceFormatError(path, reader.line_num + 1, None, f"malformed CSV: {e}") from None
