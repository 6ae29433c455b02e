"""Trace readers: one file per format, all returning a :class:`Trace`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from arrivals.traces.azure import read_azure
from arrivals.traces.burstgpt import read_burstgpt
from arrivals.traces.generic import parse_columns, read_generic
from arrivals.traces.mooncake import read_mooncake
from arrivals.traces.trace import Trace, TraceFormatError

FORMATS = ("burstgpt", "azure", "mooncake", "csv", "jsonl")


def read_trace(
    path: str | Path,
    format: str,
    *,
    columns: Mapping[str, str] | None = None,
    time_unit: str = "s",
) -> Trace:
    """Read a trace file of the given format (one of FORMATS)."""
    if format == "burstgpt":
        return read_burstgpt(path)
    if format == "azure":
        return read_azure(path)
    if format == "mooncake":
        return read_mooncake(path)
    if format in ("csv", "jsonl"):
        if not columns:
            raise ValueError(f"--trace-format {format} needs --trace-columns "
                             "time=COL,input=COL,output=COL")
        return read_generic(path, columns, format=format, time_unit=time_unit)
    raise ValueError(f"unknown trace format {format!r}; expected one of {', '.join(FORMATS)}")


__all__ = [
    "FORMATS", "Trace", "TraceFormatError", "parse_columns", "read_azure", "read_burstgpt",
    "read_generic", "read_mooncake", "read_trace",
]
