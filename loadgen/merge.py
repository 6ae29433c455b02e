"""Merging the workers' outputs into ONE run directory.

- records: every worker's Parquet file (written by its own RecordWriter, with global request
  ids) is read back through pyarrow and written as one requests.parquet, sorted by
  request_id; a worker killed before closing its writer left its crash-safe stream, whose
  complete batches are salvaged (loadgen/stream_table.py); a file that cannot be read at
  all is named in the manifest, never silently dropped;
- time series: row k of each worker is its k-th once-a-second sample; the run's row k sums the
  counts (cumulative counters, in-flight, CPU) and takes the largest loop lag; a worker that
  finished earlier contributes its last cumulative counts and nothing in flight;
- histograms: each worker's encoded HdrHistograms are added (analysis/histograms.py).

A run whose parent process died has no reports, only the workers' files (``workers/w<k>.parquet``
and ``w<k>.ts.parquet``, or their streams): analysis/load.py merges them with the same
functions (``read_records``, ``read_worker_timeseries``, ``merge_timeseries``).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.histograms import combine_described
from loadgen.engine import TIMESERIES_COLUMNS
from loadgen.records import SCHEMA
from loadgen.stream_table import salvage, segments

CUMULATIVE = ("intended", "started", "sent", "done", "failed")
TS_SCHEMA = pa.schema([(c, pa.float64()) for c in TIMESERIES_COLUMNS])


def read_records(paths: list[Path]) -> tuple[pa.Table, dict[str, str], dict[str, int]]:
    """The records of ``paths`` as one table sorted by request_id, {path: why it could not
    be read} and {path: rows salvaged from the crash-safe stream of a worker that did not
    close its writer (loadgen/stream_table.py)}."""
    tables, unreadable, salvaged = [], {}, {}
    for p in paths:
        try:
            if p.exists():
                tables.append(pq.read_table(p, schema=SCHEMA))
            elif segments(p):
                got = salvage(p, SCHEMA)
                tables.append(got.table)
                salvaged[str(p)] = got.table.num_rows
        except (pa.ArrowInvalid, OSError, ValueError) as e:
            unreadable[str(p)] = f"{type(e).__name__}: {e}"
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    return table.sort_by("request_id"), unreadable, salvaged


def write_atomic(table: pa.Table, out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, out)


def merge_records(paths: list[Path], out: Path) -> tuple[int, dict[str, str], dict[str, int]]:
    """Write the records of ``paths`` as one file ``out`` (``read_records``); return the
    number of rows and ``read_records``'s two notes."""
    table, unreadable, salvaged = read_records(paths)
    write_atomic(table, out)
    return table.num_rows, unreadable, salvaged


WORKER_FILE = re.compile(r"w(\d+)\.(?:parquet|arrows(?:\.\d+)?)")


def worker_record_paths(records_dir: Path) -> list[Path]:
    """The record files ``w<k>.parquet`` that the workers of ``records_dir`` left (finished,
    or as a stream only), by worker number."""
    if not Path(records_dir).is_dir():
        return []
    ks = {int(m.group(1)) for f in Path(records_dir).iterdir() if (m := WORKER_FILE.fullmatch(f.name))}
    return [Path(records_dir) / f"w{k}.parquet" for k in sorted(ks)]


def timeseries_path(records_path: Path) -> Path:
    """Where a worker streams its time series: ``w<k>.parquet`` -> ``w<k>.ts.parquet``."""
    return Path(records_path).with_suffix(".ts.parquet")


def read_worker_timeseries(paths: list[Path]) -> list[list[tuple]]:
    """Each worker's time series rows from its ``w<k>.ts.parquet`` (or the stream a dead
    worker left); a worker without one contributes no rows."""
    out = []
    for p in paths:
        t = None
        try:
            if p.exists():
                t = pq.read_table(p, schema=TS_SCHEMA)
            elif segments(p):
                t = salvage(p, TS_SCHEMA).table
        except (pa.ArrowInvalid, OSError, ValueError):
            t = None  # a damaged time series: the records still count
        cols = [t.column(c).to_pylist() for c in TIMESERIES_COLUMNS] if t is not None else []
        out.append(list(zip(*cols, strict=True)))
    return out


def merge_timeseries(per_worker: list[list[tuple]]) -> list[tuple]:
    """One row per sample index over all workers (see the module docstring)."""
    cols = TIMESERIES_COLUMNS
    ci = {c: i for i, c in enumerate(cols)}
    n = max((len(rows) for rows in per_worker), default=0)
    out = []
    for k in range(n):
        vals = {c: 0.0 for c in cols}
        t, lag = -math.inf, -math.inf
        for rows in per_worker:
            if not rows:
                continue
            r = rows[min(k, len(rows) - 1)]
            if k < len(rows):
                t = max(t, r[ci["t"]])
                vals["in_flight"] += r[ci["in_flight"]]
                vals["cpu_s"] += r[ci["cpu_s"]]
                if r[ci["loop_lag_max_ms"]] == r[ci["loop_lag_max_ms"]]:  # not NaN
                    lag = max(lag, r[ci["loop_lag_max_ms"]])
            for c in CUMULATIVE:
                vals[c] += r[ci[c]]
        vals["t"] = t
        vals["loop_lag_max_ms"] = lag if lag > -math.inf else math.nan
        out.append(tuple(vals[c] for c in cols))
    return out


def timeseries_table(rows: list[tuple]) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array([r[i] for r in rows], type=pa.float64()) for i in range(len(TIMESERIES_COLUMNS))],
        schema=TS_SCHEMA)


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "hdr"}


def generator_section(reports: list[dict[str, Any]], t0: float, n_recorded: int) -> dict[str, Any]:
    """The manifest's ``generator`` section of a run made by several workers: the run's totals
    (CPU summed, wall time the longest), merged event-loop lag, each worker's own figures, and
    the merged encoded histograms."""
    lag = combine_described([r["event_loop_lag_ms"] for r in reports])
    hist = {k: combine_described([r[f"{k}_ms"] for r in reports]).get("hdr")
            for k in ("send_lag", "ttft", "e2e", "event_loop_lag")}
    per = []
    for r in reports:
        per.append({
            "worker": r["worker"], "pid": r.get("pid"), "node": r.get("node"),
            "requests": r["requests"], "recorded": r["recorded"], "interrupted": r["interrupted"],
            "t0_offset_ms": (r["t0"] - t0) * 1e3 if r.get("same_clock", True) else None,
            "clock": r.get("clock"),
            "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "prepare_s": r["prepare_s"],
            "counters": r["counters"],
            "send_lag_ms": _strip(r["send_lag_ms"]),
            "event_loop_lag_ms": _strip(r["event_loop_lag_ms"]),
        })
    return {
        "wall_s": max((r["wall_s"] for r in reports), default=0.0),
        "cpu_s": sum(r["cpu_s"] for r in reports),
        "event_loop_lag_ms": {**_strip(lag), "probe_interval_ms": 10.0},
        "requests_started": sum(r["counters"]["started"] for r in reports),
        "requests_recorded": n_recorded,
        "requests_lost": sum(r.get("lost", 0) for r in reports),
        "workers": per,
        "histograms": hist,
    }
