"""Any CSV or JSONL trace, given a column mapping.

``columns`` maps our names to the file's: ``time``, ``input`` and ``output`` are required;
``model``, ``log_type``, ``session_id`` and ``elapsed`` (seconds the request took in the
traced service, read as the extra column ``elapsed_time``) are optional and kept as extra
columns.
``time_unit`` says what the time column holds: ``s``, ``ms``, ``us``, ``ns`` (numbers) or
``iso`` (ISO 8601 date-times, parsed with numpy datetime64). A row whose output is 0 is
marked failed (``ok = False``), like BurstGPT's failures.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from arrivals.traces._csv import rows
from arrivals.traces._jsonl import json_lines
from arrivals.traces.trace import Trace, TraceFormatError, build_trace, parse_float, parse_int

REQUIRED = ("time", "input", "output")
OPTIONAL = ("model", "log_type", "session_id", "elapsed")
UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}  # divisors to seconds


def parse_columns(spec: str) -> dict[str, str]:
    """``"time=ts,input=prompt_len,output=gen_len"`` -> a mapping (for --trace-columns)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise ValueError(f"column mapping item {part!r} is not KEY=COLUMN (e.g. time=ts)")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in REQUIRED + OPTIONAL:
            raise ValueError(f"unknown column key {k!r}; use {', '.join(REQUIRED + OPTIONAL)}")
        out[k] = v
    return out


def read_generic(
    path: str | Path, columns: Mapping[str, str], *, format: str = "csv", time_unit: str = "s"
) -> Trace:
    """Read a CSV (with header) or JSONL trace with the given column mapping."""
    missing = [k for k in REQUIRED if k not in columns]
    if missing:
        raise ValueError(f"column mapping lacks {missing}; give e.g. "
                         "--trace-columns time=TS,input=IN_TOKENS,output=OUT_TOKENS")
    if time_unit not in (*UNITS, "iso"):
        raise ValueError(f"time unit must be one of {', '.join((*UNITS, 'iso'))}, "
                         f"got {time_unit!r}")
    if format not in ("csv", "jsonl"):
        raise ValueError(f"generic trace format must be csv or jsonl, got {format!r}")
    need = [columns[k] for k in REQUIRED]
    it: Iterator[tuple[int, dict[str, Any]]] = (
        rows(path, need) if format == "csv" else json_lines(path, need))
    t: list[Any] = []
    inp: list[int] = []
    out: list[int] = []
    line_no: list[int] = []
    extra: dict[str, list] = {k: [] for k in OPTIONAL if k in columns}
    elapsed = extra.pop("elapsed", None)
    for line, r in it:
        tc = columns["time"]
        if time_unit == "iso":
            try:
                t.append(np.datetime64(str(r[tc]).replace(" ", "T").rstrip("Z"), "ns"))
            except ValueError:
                raise TraceFormatError(path, line, tc,
                                       f"expected an ISO 8601 date-time, got {r[tc]!r}") from None
        else:
            t.append(parse_float(r[tc], path, line, tc) / UNITS[time_unit])
        inp.append(parse_int(r[columns["input"]], path, line, columns["input"]))
        out.append(parse_int(r[columns["output"]], path, line, columns["output"]))
        for k in extra:
            if columns[k] not in r:
                raise TraceFormatError(path, line, columns[k], "missing column")
            extra[k].append(r[columns[k]])
        if elapsed is not None:
            ec = columns["elapsed"]
            if ec not in r:
                raise TraceFormatError(path, line, ec, "missing column")
            elapsed.append(parse_float(r[ec], path, line, ec))
        line_no.append(line)
    if time_unit == "iso" and t:
        ns = np.array(t, dtype="datetime64[ns]").astype(np.int64)
        t = list((ns - ns.min()).astype(np.float64) / 1e9)
    if elapsed is not None:
        extra["elapsed_time"] = elapsed
    ok = [o > 0 for o in out]
    return build_trace(t, inp, out, line_no, source=path, format=format, ok=ok, extra=extra)
