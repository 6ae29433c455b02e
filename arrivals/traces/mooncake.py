"""Mooncake traces (kvcache-ai/Mooncake, FAST '25): JSONL, one request per line:
``{"timestamp": ms, "input_length": int, "output_length": int, "hash_ids": [int, ...]}``.

``hash_ids`` are prefix-block ids (512 tokens per block; equal leading ids = shareable prefix)
and are kept as a list per request in ``extra["hash_ids"]``.
"""

from __future__ import annotations

from pathlib import Path

from arrivals.traces._jsonl import json_lines
from arrivals.traces.trace import Trace, TraceFormatError, build_trace, parse_float, parse_int


def read_mooncake(path: str | Path) -> Trace:
    """Read a Mooncake JSONL trace into a Trace (times converted from ms to s)."""
    t: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    line_no: list[int] = []
    hashes: list[list[int]] = []
    for line, rec in json_lines(path, ("timestamp", "input_length", "output_length")):
        t.append(parse_float(rec["timestamp"], path, line, "timestamp") / 1000.0)
        inp.append(parse_int(rec["input_length"], path, line, "input_length"))
        out.append(parse_int(rec["output_length"], path, line, "output_length"))
        h = rec.get("hash_ids", [])
        if not isinstance(h, list):
            raise TraceFormatError(path, line, "hash_ids", f"expected a list of ints, got {h!r}")
        hashes.append(h)
        line_no.append(line)
    return build_trace(t, inp, out, line_no, source=path, format="mooncake",
                       extra={"hash_ids": hashes})
