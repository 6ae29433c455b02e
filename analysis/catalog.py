"""The results catalog: every run's manifest and summary in one queryable SQLite file.

Why SQLite (the standard library's ``sqlite3``) and not DuckDB over the Parquet files:
- several matrices write into one store at the same time; SQLite serialises writers across
  processes with file locks (WAL mode, a busy timeout), while a DuckDB database file can be
  opened for writing by one process only;
- the catalog indexes summaries (a few hundred numbers per run), not per-request rows, so a
  row store is plenty; per-request questions go to the run's requests.parquet (pyarrow, or
  DuckDB/pandas by the user) from the ``run_dir`` a query returns;
- nothing to install: ``sqlite3`` ships with Python, and the file opens in any SQLite tool.
The JSON1 functions reach every field that has no column:
``json_extract(manifest, '$.environment.cpu.model')``.

The run directories are the source of truth; the catalog is derived and ``rebuild`` recreates
it from them at any time (``loadgen results rebuild``). Tables:

  runs    one row per run directory found under the store: the cell's axes, the offered
          rate, status and verdict, throughput, latency percentiles (``ttft_*``/``e2e_*`` from
          each request's intended send time, what a user sees; ``*_sent_*`` from the actual
          send; ``tpot_*``, ``itl_*``), environment, and the full manifest and summary as JSON;
          ``current`` = the run belongs to its cell's latest attempt
  cells   one row per matrix cell: axes, status, cause of a failure or skip, the knee (capacity
          at the SLO) with its interval
  latest  view: the complete runs of ``current`` attempts, without saturation probes
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

CATALOG_VERSION = 1
ATTEMPT_RE = re.compile(r"^cells/([0-9a-f]+)/attempt-(\d+)(?:/|$)")

RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_dir", "TEXT PRIMARY KEY"), ("cell_id", "TEXT"), ("attempt", "INTEGER"),
    ("current", "INTEGER"), ("is_probe", "INTEGER"), ("experiment", "TEXT"),
    ("runtime", "TEXT"), ("runtime_version", "TEXT"), ("model", "TEXT"), ("model_source", "TEXT"),
    ("batch_size", "INTEGER"), ("tp", "INTEGER"), ("pp", "INTEGER"), ("workload", "TEXT"),
    ("dataset", "TEXT"), ("arrival", "TEXT"), ("repetition", "INTEGER"), ("rate", "REAL"),
    ("num_requests", "INTEGER"), ("status", "TEXT"), ("verdict", "TEXT"), ("created_utc", "TEXT"),
    ("ok", "INTEGER"), ("failed", "INTEGER"), ("duration_s", "REAL"),
    ("request_throughput", "REAL"), ("output_token_throughput", "REAL"),
    ("intended_rate", "REAL"), ("achieved_send_rate", "REAL"),
    ("ttft_mean_ms", "REAL"), ("ttft_p50_ms", "REAL"), ("ttft_p90_ms", "REAL"),
    ("ttft_p99_ms", "REAL"), ("e2e_mean_ms", "REAL"), ("e2e_p50_ms", "REAL"),
    ("e2e_p90_ms", "REAL"), ("e2e_p99_ms", "REAL"), ("ttft_sent_p50_ms", "REAL"),
    ("ttft_sent_p99_ms", "REAL"), ("e2e_sent_p50_ms", "REAL"), ("e2e_sent_p99_ms", "REAL"),
    ("tpot_p50_ms", "REAL"), ("tpot_p99_ms", "REAL"), ("itl_p50_ms", "REAL"),
    ("itl_p99_ms", "REAL"), ("send_lag_p99_ms", "REAL"), ("host", "TEXT"), ("cpu", "TEXT"),
    ("gpu", "TEXT"), ("tool_commit", "TEXT"), ("manifest", "TEXT"), ("summary", "TEXT"),
)
CELL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cell_id", "TEXT PRIMARY KEY"), ("label", "TEXT"), ("status", "TEXT"), ("cause", "TEXT"),
    ("attempt", "INTEGER"), ("runtime", "TEXT"), ("model", "TEXT"), ("batch_size", "INTEGER"),
    ("tp", "INTEGER"), ("pp", "INTEGER"), ("workload", "TEXT"), ("repetition", "INTEGER"),
    ("rates", "TEXT"), ("knee_rate", "REAL"), ("knee_low", "REAL"), ("knee_high", "REAL"),
    ("knee_achieved_rps", "REAL"), ("max_achieved_rps", "REAL"), ("slo", "TEXT"),
    ("experiments", "TEXT"), ("config", "TEXT"), ("updated_utc", "TEXT"),
)
# What `loadgen results list` shows by default (the JSON columns are for queries).
LIST_COLUMNS = ("runtime", "model", "batch_size", "tp", "workload", "repetition", "rate",
                "verdict", "ok", "failed", "request_throughput", "ttft_p50_ms", "ttft_p99_ms",
                "e2e_p50_ms", "e2e_p99_ms", "itl_p99_ms", "cell_id")


def _schema() -> list[str]:
    runs = ", ".join(f'"{c}" {t}' for c, t in RUN_COLUMNS)
    cells = ", ".join(f'"{c}" {t}' for c, t in CELL_COLUMNS)
    return [f"CREATE TABLE IF NOT EXISTS runs ({runs})",
            f"CREATE TABLE IF NOT EXISTS cells ({cells})",
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
            "CREATE VIEW IF NOT EXISTS latest AS SELECT * FROM runs WHERE current = 1 "
            "AND is_probe = 0 AND status = 'complete'",
            "CREATE INDEX IF NOT EXISTS runs_cell ON runs (cell_id)"]


_DROP = ["DROP VIEW IF EXISTS latest", "DROP TABLE IF EXISTS runs",
         "DROP TABLE IF EXISTS cells", "DROP TABLE IF EXISTS meta"]


def connect(db: Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection with WAL (readers never block the writer) and a 60 s busy timeout (two
    matrices indexing at once wait for each other instead of failing)."""
    if readonly:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
    else:
        db.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(db, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        with con:
            for stmt in _schema():
                con.execute(stmt)
    con.row_factory = sqlite3.Row
    return con


def version_of(con: sqlite3.Connection) -> int | None:
    """The CATALOG_VERSION a catalog was written with (None: unknown or empty)."""
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


# ---- rows from directories (pure apart from reading files) -----------------------------------

def _read(path: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _text(x: Any) -> str | None:
    if x is None or isinstance(x, dict):
        return None
    return str(x)


def _json(x: Any) -> str:
    return orjson.dumps(x, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                        default=str).decode()


def find_run_dirs(root: Path) -> Iterator[Path]:
    """Every directory under ``root`` holding a run's manifest.json (report folders skipped)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("report", "logs", "servers"))
        if "manifest.json" in filenames:
            m = _read(Path(dirpath) / "manifest.json")
            if m and m.get("kind") == "llm-loadgen run":
                yield Path(dirpath)
                dirnames[:] = []


def _sweep_rate(run_dir: Path) -> tuple[float | None, bool]:
    """(offered rate, is the saturation probe) from the enclosing sweep.json, if any."""
    meta = _read(run_dir.parent / "sweep.json")
    if not meta:
        return None, False
    if run_dir.name == (meta.get("probe") or {}).get("run_dir", "probe"):
        return None, True
    for r in meta.get("runs", []):
        if r.get("run_dir") == run_dir.name:
            return _num(r.get("rate")), False
    return None, False


def run_row(root: Path, run_dir: Path, latest_attempt: dict[str, int]) -> dict[str, Any]:
    """The ``runs`` row of one run directory."""
    m = _read(run_dir / "manifest.json") or {}
    s = _read(run_dir / "summary.json") or {}
    s.pop("histograms", None)
    rel = run_dir.relative_to(root).as_posix()
    mt = ATTEMPT_RE.match(rel)
    cell_id, attempt = (mt.group(1), int(mt.group(2))) if mt else (None, None)
    mx = m.get("matrix") or {}
    axes = mx.get("axes") or {}
    launch = m.get("server_launch") or {}
    wl = m.get("workload") or {}
    rate, is_probe = _sweep_rate(run_dir)
    if rate is None and not is_probe:
        rate = _num(wl.get("request_rate"))
    lat_i = _get(s, "latency_ms", "from_intended") or {}
    lat_s = _get(s, "latency_ms", "from_sent") or {}
    env = m.get("environment") or {}
    gpus = _get(env, "gpu", "devices")
    gpu = ", ".join(str(d.get("name")) for d in gpus if isinstance(d, dict)) if gpus else None
    version = _get(launch, "version", "version")
    row = {
        "run_dir": rel, "cell_id": cell_id, "attempt": attempt,
        "current": int(cell_id is None or latest_attempt.get(cell_id) == attempt),
        "is_probe": int(is_probe), "experiment": mx.get("experiment"),
        "runtime": axes.get("runtime") or launch.get("runtime"),
        "runtime_version": _text(version),
        "model": axes.get("model") or _get(m, "config", "client", "model"),
        "model_source": _text(_get(launch, "settings", "model")),
        "batch_size": axes.get("batch_size", _get(launch, "settings", "max_batch_size")),
        "tp": axes.get("tp"), "pp": axes.get("pp"), "workload": axes.get("workload"),
        "dataset": wl.get("dataset"), "arrival": wl.get("process"),
        "repetition": axes.get("repetition"), "rate": rate,
        "num_requests": wl.get("num_requests"), "status": m.get("status"),
        "verdict": _get(s, "validity", "verdict"), "created_utc": m.get("created_utc"),
        "ok": _get(s, "counts", "ok"), "failed": _get(s, "counts", "failed"),
        "duration_s": _num(_get(s, "throughput", "duration_s")),
        "request_throughput": _num(_get(s, "throughput", "request_throughput")),
        "output_token_throughput": _num(_get(s, "throughput", "output_token_throughput")),
        "intended_rate": _num(_get(s, "throughput", "intended_rate")),
        "achieved_send_rate": _num(_get(s, "throughput", "achieved_send_rate")),
        "send_lag_p99_ms": _num(_get(s, "validity", "send_lag_p99_ms")),
        "host": _text(_get(env, "os", "hostname")), "cpu": _text(_get(env, "cpu", "model")),
        "gpu": gpu, "tool_commit": _text(_get(m, "tool", "git", "commit")),
        "manifest": _json(m), "summary": _json(s),
    }
    for metric in ("ttft", "e2e"):
        for k in ("mean", "p50", "p90", "p99"):
            row[f"{metric}_{k}_ms"] = _num(_get(lat_i, metric, k))
        for k in ("p50", "p99"):
            row[f"{metric}_sent_{k}_ms"] = _num(_get(lat_s, metric, k))
    for metric in ("tpot", "itl"):
        for k in ("p50", "p99"):
            row[f"{metric}_{k}_ms"] = _num(_get(lat_s, metric, k))
    return row


def cell_row(rec: dict[str, Any]) -> dict[str, Any]:
    a = rec.get("axes") or {}
    res = rec.get("result") or {}
    k = res.get("knee") or {}
    return {
        "cell_id": rec.get("cell_id"), "label": rec.get("label"), "status": rec.get("status"),
        "cause": rec.get("cause"), "attempt": rec.get("attempt"),
        **{x: a.get(x) for x in ("runtime", "model", "batch_size", "tp", "pp", "workload",
                                 "repetition")},
        "rates": _json(res.get("rates")) if res.get("rates") is not None else None,
        "knee_rate": _num(k.get("rate")), "knee_low": _num(k.get("low")),
        "knee_high": _num(k.get("high")), "knee_achieved_rps": _num(k.get("achieved_rps")),
        "max_achieved_rps": _num(res.get("max_achieved_rps")),
        "slo": _json(res.get("slo")) if res.get("slo") else None,
        "experiments": _json(rec.get("experiments") or []),
        "config": _json(rec.get("config")), "updated_utc": rec.get("updated_utc"),
    }


def _cell_records(root: Path) -> Iterator[dict[str, Any]]:
    d = root / "cells"
    if d.is_dir():
        for p in sorted(d.iterdir()):
            rec = _read(p / "cell.json")
            if rec:
                yield rec


def _insert(con: sqlite3.Connection, table: str, rows: Iterable[dict[str, Any]]) -> int:
    cols = [c for c, _ in (RUN_COLUMNS if table == "runs" else CELL_COLUMNS)]
    sql = (f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) "
           f"VALUES ({', '.join('?' for _ in cols)})")
    n = 0
    for r in rows:
        con.execute(sql, [r.get(c) for c in cols])
        n += 1
    return n


def _set_meta(con: sqlite3.Connection) -> None:
    con.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (str(CATALOG_VERSION),))
    con.execute("INSERT OR REPLACE INTO meta VALUES ('updated_utc', ?)",
                (datetime.now(UTC).isoformat(),))


def rebuild(root: str | Path, db: Path | None = None) -> dict[str, int]:
    """Recreate the catalog of ``root`` from its directories, in one transaction (readers see
    the old catalog or the new one, never half of it)."""
    root = Path(root)
    db = db or root / "catalog.sqlite"
    cells = list(_cell_records(root))
    latest = {c["cell_id"]: c.get("attempt") for c in cells if c.get("cell_id")}
    run_rows = [run_row(root, d, latest) for d in find_run_dirs(root)]
    con = connect(db)
    try:
        with con:  # tables are dropped and recreated: the layout may be an older version's
            con.execute("BEGIN IMMEDIATE")
            for stmt in (*_DROP, *_schema()):
                con.execute(stmt)
            n_runs = _insert(con, "runs", run_rows)
            n_cells = _insert(con, "cells", (cell_row(c) for c in cells))
            _set_meta(con)
    finally:
        con.close()
    return {"runs": n_runs, "cells": n_cells}


def index_cell(root: str | Path, cell_id: str, db: Path | None = None) -> int:
    """Re-index one cell (its record and every run under it) after a matrix ran it."""
    root = Path(root)
    db = db or root / "catalog.sqlite"
    rec = _read(root / "cells" / cell_id / "cell.json")
    latest = {cell_id: rec.get("attempt")} if rec else {}
    rows = [run_row(root, d, latest) for d in find_run_dirs(root / "cells" / cell_id)]
    con = connect(db)
    if version_of(con) not in (None, CATALOG_VERSION):
        con.close()
        return rebuild(root, db)["runs"]
    try:
        with con:
            con.execute("BEGIN IMMEDIATE")
            con.execute("DELETE FROM runs WHERE cell_id = ?", (cell_id,))
            con.execute("DELETE FROM cells WHERE cell_id = ?", (cell_id,))
            n = _insert(con, "runs", rows)
            if rec:
                _insert(con, "cells", [cell_row(rec)])
            _set_meta(con)
    finally:
        con.close()
    return n


def ensure(root: str | Path) -> Path:
    """The catalog of ``root``, rebuilt first if it does not exist yet."""
    root = Path(root)
    db = root / "catalog.sqlite"
    if not db.exists():
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no results store here (run a matrix, or pass "
                                    "--store DIR)")
        rebuild(root, db)
        return db
    con = sqlite3.connect(db, timeout=60)
    try:
        stale = version_of(con) != CATALOG_VERSION
    finally:
        con.close()
    if stale:  # written by another version of this tool: it is derived, so rebuild it
        rebuild(root, db)
    return db


def query(root: str | Path, sql: str, params: Iterable[Any] = ()
          ) -> tuple[list[str], list[tuple]]:
    """Run one read-only SQL statement on the catalog; (column names, rows)."""
    db = ensure(root)
    con = connect(db, readonly=True)
    try:
        cur = con.execute(sql, tuple(params))
        cols = [d[0] for d in cur.description or []]
        return cols, [tuple(r) for r in cur.fetchall()]
    finally:
        con.close()
