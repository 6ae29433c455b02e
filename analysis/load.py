"""Reading a run directory: manifest.json, requests.parquet, timeseries.parquet.

A run whose generator died without closing it (SIGKILL, the OOM killer, a crash) has no
``requests.parquet`` yet: its records are in the crash-safe stream ``requests.arrows``
(loadgen/stream_table.py), complete up to the last flush (about once a second), and its
manifest still says ``status: running``. ``load_run`` recovers such a run: it converts the
stream to ``requests.parquet`` (and ``timeseries.arrows`` likewise), marks the manifest
``partial`` with ``interrupted_by: killed`` and a ``recovery`` note, and writes both back
(atomically). A folder it may not write is recovered in memory only. A run whose generator
is still alive (it holds the stream's lock) is read as a snapshot and left untouched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from loadgen.stream_table import finalize, salvage, segments, writer_alive

KILLED = "killed"
"""``interrupted_by`` of a run recovered after its generator died without a clean stop."""


@dataclass(frozen=True)
class Run:
    path: Path
    manifest: dict[str, Any]
    requests: pa.Table
    timeseries: pa.Table | None


def has_records(path: str | Path) -> bool:
    """Does this run directory hold records (finished, or a stream to recover)?"""
    rpath = Path(path) / "requests.parquet"
    return rpath.exists() or bool(segments(rpath))


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: unreadable ({e}); the file is damaged (it was not written "
                         "by loadgen's atomic rename, or the disk corrupted it)") from e


def _load_table(path: Path, recover: bool, notes: dict[str, Any]) -> pa.Table | None:
    """The table of ``path``, recovering its stream segments if the writer is gone."""
    segs = segments(path)
    if not segs:
        return _read_parquet(path) if path.exists() else None
    if writer_alive(path):  # a live run: a snapshot, nothing changed
        notes["live"] = True
        return salvage(path).table
    if path.exists():  # converted, killed before the stream was removed
        if recover:
            for s in segs:
                with contextlib.suppress(OSError):
                    s.unlink()
        return _read_parquet(path)
    got = salvage(path)
    note: dict[str, Any] = {"rows": got.table.num_rows, "batches": got.batches,
                            "from": [s.name for s in segs]}
    if got.error:
        note["dropped"] = got.error
    if recover:
        try:
            finalize(path)
            note["converted_to"] = path.name
        except OSError as e:  # read-only folder, disk full: recovered in memory only
            note["not_written"] = f"{type(e).__name__}: {e}"
    notes[path.name] = note
    return got.table


def load_run(path: str | Path, recover: bool = True) -> Run:
    """Load a (complete, partial or killed) run directory written by ``loadgen run``.

    With ``recover`` (the default) a run left behind by a dead generator is repaired on disk
    as the module docstring says; ``recover=False`` reads it in memory and writes nothing.
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: not a run directory (expected a folder with manifest.json)")
    mpath = p / "manifest.json"
    if not mpath.exists():
        raise FileNotFoundError(f"{p}: no manifest.json; is this a run directory of loadgen run?")
    try:
        manifest = orjson.loads(mpath.read_bytes())
    except orjson.JSONDecodeError as e:
        raise ValueError(f"{mpath}: not valid JSON ({e})") from e
    notes: dict[str, Any] = {}
    rpath = p / "requests.parquet"
    requests = _load_table(rpath, recover, notes)
    if requests is None:
        raise FileNotFoundError(f"{rpath}: missing; the run wrote no records")
    timeseries = _load_table(p / "timeseries.parquet", recover, notes)
    if manifest.get("status") == "running" and not notes.get("live"):
        marked = _mark_killed(manifest, notes, requests.num_rows)
        if recover:
            from loadgen.manifest import update_json_locked

            def mark(current: dict[str, Any]) -> dict[str, Any] | None:
                # what is on disk now (the telemetry process may have added its note)
                return _mark_killed(current, notes, requests.num_rows) \
                    if current.get("status") == "running" else None

            with contextlib.suppress(OSError, ValueError):
                marked = update_json_locked(mpath, mark) or marked
        manifest = marked
    return Run(path=p, manifest=manifest, requests=requests, timeseries=timeseries)


def _mark_killed(manifest: dict[str, Any], notes: dict[str, Any], rows: int) -> dict[str, Any]:
    """The manifest of a run whose generator stopped without finishing it."""
    m = dict(manifest)
    m["status"] = "partial"
    m["interrupted_by"] = KILLED
    m["recovery"] = {
        "reason": "the generator stopped without closing the run (SIGKILL, out of memory or a "
                  "crash); records recovered up to its last flush (about once a second)",
        "requests_recovered": rows,
        "recovered_utc": datetime.now(UTC).isoformat(),
        **{k: v for k, v in notes.items() if k != "live"},
    }
    return m
