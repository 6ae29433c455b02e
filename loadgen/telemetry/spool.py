"""Append-only JSON-lines files that keep telemetry on disk as it is taken.

The sampler and the scraper write every sample, as one line, to a spool file in the run
directory (``telemetry.spool.jsonl``, ``server_metrics.spool.jsonl``) the moment they take it:
one ``write`` system call on an unbuffered file opened with O_APPEND, so a line is in the
kernel's page cache as soon as the call returns and survives the death of any process (not
of the machine: nothing is fsync'd). At the end of a run the Parquet files are written and the
spools removed; after a crash ``loadgen.telemetry.recover`` turns the spools into the same
Parquet files.

Reading (``read_spool``) keeps every complete line and drops a last line without its newline
(a write cut short) or that does not parse, and says so. Lines holding ``{"meta": {...}}``
are merged into the metadata (t0, the writer's pid, why GPUs were not sampled...) instead of
being rows.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import orjson

SAMPLER_SPOOL = "telemetry.spool.jsonl"
SCRAPER_SPOOL = "server_metrics.spool.jsonl"


class Spool:
    """One append-only JSON-lines file; ``write`` is one system call per line, thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, obj: dict[str, Any]) -> None:
        line = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        with self._lock:
            if self._fd < 0:
                return
            os.write(self._fd, line)
            self.lines += 1

    def meta(self, **fields: Any) -> None:
        self.write({"meta": fields})

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __getstate__(self) -> dict[str, Any]:  # the telemetry child pickles its parts
        return {"path": str(self.path), "lines": self.lines}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.lines = Path(state["path"]), state["lines"]
        self._fd, self._lock = -1, threading.Lock()


def read_spool(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """(rows, merged meta, lines dropped) of a spool file."""
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    dropped = 0
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ended with a newline: no partial last line
    elif lines:
        lines.pop()  # a last line without its newline: the write was cut short
        dropped += 1
    for line in lines:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(obj, dict) and isinstance(obj.get("meta"), dict):
            meta.update(obj["meta"])
        elif isinstance(obj, dict):
            rows.append(obj)
        else:
            dropped += 1
    return rows, meta, dropped
