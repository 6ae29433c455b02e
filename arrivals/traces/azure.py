"""Azure LLM inference traces 2023/2024 (Azure/AzurePublicDataset, Splitwise / DynamoLLM).

CSV, CRLF line ends: ``TIMESTAMP,ContextTokens,GeneratedTokens``; ``TIMESTAMP`` like
``2023-11-16 18:17:03.9799600`` (7 fractional digits = 100 ns ticks, no timezone; a trailing
``Z`` or ``+HH:MM`` offset is accepted and converted to UTC). Times are parsed exactly to the
nanosecond with numpy datetime64, then made seconds from the first request.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from arrivals.traces._csv import rows
from arrivals.traces.trace import Trace, TraceFormatError, build_trace, parse_int

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_TS = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)"
                 r"(Z|[+-]\d{2}:\d{2})?$")


def read_azure(path: str | Path) -> Trace:
    """Read an Azure LLM inference trace CSV into a Trace."""
    stamps: list[str] = []
    offsets: list[int] = []
    inp: list[int] = []
    out: list[int] = []
    line_no: list[int] = []
    for line, r in rows(path, COLUMNS):
        m = _TS.match(r["TIMESTAMP"].strip())
        if not m:
            raise TraceFormatError(path, line, "TIMESTAMP", f"expected a time like "
                                   f"'2023-11-16 18:17:03.9799600', got {r['TIMESTAMP']!r}")
        stamps.append(f"{m[1]}T{m[2]}")
        tz = m[3]
        offsets.append(0 if tz in (None, "Z") else
                       (1 if tz[0] == "+" else -1) * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60))
        inp.append(parse_int(r["ContextTokens"], path, line, "ContextTokens"))
        out.append(parse_int(r["GeneratedTokens"], path, line, "GeneratedTokens"))
        line_no.append(line)
    if not stamps:
        raise TraceFormatError(path, None, None, "no requests in the file (only a header?)")
    ns = np.array(stamps, dtype="datetime64[ns]").astype(np.int64)
    ns = ns - np.asarray(offsets, dtype=np.int64) * 1_000_000_000
    # Subtract the first stamp in integers before going to float seconds (no precision loss).
    sec = (ns - ns.min()).astype(np.float64) / 1e9
    return build_trace(sec, inp, out, line_no, source=path, format="azure")
