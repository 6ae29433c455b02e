"""Reading a run directory: manifest.json, requests.parquet, timeseries.parquet.

A run whose generator died without closing it (SIGKILL, the OOM killer, a crash) has no
``requests.parquet`` yet: its records are in the crash-safe stream ``requests.arrows``
(loadgen/stream_table.py), complete up to the last flush (about once a second), and its
manifest still says ``status: running``. ``load_run`` recovers such a run: it converts the
stream to ``requests.parquet`` (and ``timeseries.arrows`` likewise), marks the manifest
``partial`` with ``interrupted_by: killed`` and a ``recovery`` note, and writes both back
(atomically). A folder it may not write is recovered in memory only. A run whose generator
is still alive (it holds the stream's lock) is read as a snapshot and left untouched.

A run of several worker processes (``--workers N``) whose parent died has no
``requests.parquet`` and no stream of its own: its records are the workers' files under
``workers/`` (``w<k>.parquet``, closed by workers that stopped when the parent died, or the
stream of one that was killed too; loadgen/merge.py). ``load_run`` merges them with the
merge code of a finished run (records sorted by request id, time series summed per second)
into ``requests.parquet`` and ``timeseries.parquet``, removes ``workers/`` (unless a file
could not be read) and says so under ``recovery.workers``. While any worker still holds its
stream's lock, the merge is a snapshot in memory and nothing is changed.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from loadgen.stream_table import finalize, salvage, segments, writer_alive

KILLED = "killed"
"""``interrupted_by`` of a run recovered after its generator died without a clean stop."""
WORKERS_DIR = "workers"  # loadgen/workers.py: the worker processes' own files


@dataclass(frozen=True)
class Run:
    path: Path
    manifest: dict[str, Any]
    requests: pa.Table
    timeseries: pa.Table | None


def has_records(path: str | Path) -> bool:
    """Does this run directory hold records (finished, a stream, or workers' files to
    recover)?"""
    rpath = Path(path) / "requests.parquet"
    if rpath.exists() or segments(rpath):
        return True
    from loadgen.merge import worker_record_paths

    return bool(worker_record_paths(Path(path) / WORKERS_DIR))


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
    ts_workers = None
    if requests is None:
        got = _merge_workers(p, recover, notes)
        if got is None:
            raise FileNotFoundError(f"{rpath}: missing; the run wrote no records")
        requests, ts_workers = got
    timeseries = _load_table(p / "timeseries.parquet", recover, notes)
    if timeseries is None:
        timeseries = ts_workers
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


def _merge_workers(p: Path, recover: bool, notes: dict[str, Any]
                   ) -> tuple[pa.Table, pa.Table | None] | None:
    """The records and time series of a workers run whose parent died (module docstring),
    or None if ``p`` has no workers' files."""
    from loadgen.merge import (
        merge_timeseries,
        read_records,
        read_worker_timeseries,
        timeseries_path,
        timeseries_table,
        worker_record_paths,
        write_atomic,
    )

    wdir = p / WORKERS_DIR
    paths = worker_record_paths(wdir)
    if not paths:
        return None
    table, unreadable, salvaged = read_records(paths)
    per_worker = read_worker_timeseries([timeseries_path(x) for x in paths])
    ts = timeseries_table(merge_timeseries(per_worker)) if any(per_worker) else None
    if any(writer_alive(x) or writer_alive(timeseries_path(x)) for x in paths):
        notes["live"] = True  # workers still writing (their parent just died): a snapshot
        return table, ts
    note: dict[str, Any] = {
        "reason": "the parent process of the worker processes died; the workers stopped with "
                  "it (parent-death signal or closed socket) and their files were merged",
        "merged_from": [x.name for x in paths], "rows": table.num_rows,
        "rows_by_worker": {str(k): int(v) for k, v in zip(
            *np.unique(table.column("worker").to_numpy(), return_counts=True), strict=True)},
        "salvaged_streams": {Path(k).name: v for k, v in salvaged.items()},
        "timeseries_rows": ts.num_rows if ts is not None else 0}
    if unreadable:
        note["unreadable"] = {Path(k).name: v for k, v in unreadable.items()}
    if recover:
        try:
            write_atomic(table, p / "requests.parquet")
            if ts is not None and not (p / "timeseries.parquet").exists():
                write_atomic(ts, p / "timeseries.parquet")
            note["converted_to"] = "requests.parquet"
            if not unreadable:
                shutil.rmtree(wdir, ignore_errors=True)
        except OSError as e:  # read-only folder, disk full: recovered in memory only
            note["not_written"] = f"{type(e).__name__}: {e}"
    notes[WORKERS_DIR] = note
    return table, ts
