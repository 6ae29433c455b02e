"""Reading a run directory: manifest.json, requests.parquet, timeseries.parquet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Run:
    path: Path
    manifest: dict[str, Any]
    requests: pa.Table
    timeseries: pa.Table | None


def load_run(path: str | Path) -> Run:
    """Load a (complete or partial) run directory written by ``loadgen run``."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: not a run directory (expected a folder with manifest.json)")
    mpath = p / "manifest.json"
    if not mpath.exists():
        raise FileNotFoundError(f"{p}: no manifest.json; is this a run directory of loadgen run?")
    manifest = orjson.loads(mpath.read_bytes())
    rpath = p / "requests.parquet"
    if not rpath.exists():
        raise FileNotFoundError(f"{rpath}: missing; the run wrote no records")
    try:
        requests = pq.read_table(rpath)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(
            f"{rpath}: unreadable ({e}); the generator was probably killed before closing it"
        ) from e
    tpath = p / "timeseries.parquet"
    timeseries = pq.read_table(tpath) if tpath.exists() else None
    return Run(path=p, manifest=manifest, requests=requests, timeseries=timeseries)
