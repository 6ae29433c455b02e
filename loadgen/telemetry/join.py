"""Per-request server state, and where TTFT goes.

``join_requests`` gives each request the server's queue length, running batch and KV-cache use
from the last scrape at or before its ``t_sent`` (``server_metrics.parquet``), plus the age of
that scrape; requests.parquet itself is never changed (the result goes to
``requests_joined.parquet``).

``decompose_ttft`` splits TTFT measured from t_intended into generator lag, server queue,
server prefill and transport/other, from the server-reported timings that the client stores
in requests.parquet (``server_queue_s``, ``server_prefill_s``); the definitions and the
per-request/summary functions are in ``analysis/ttft_parts.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loadgen.telemetry.scraper import COMMON, common_series

JOIN_COLUMNS = ("request_id", "t_intended", "t_sent", "t_first_token", "t_done", "status")


def state_at(t_scrape: np.ndarray, values: np.ndarray, t: np.ndarray) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """values of the last scrape at or before each t (NaN before the first), and its time."""
    i = np.searchsorted(t_scrape, t, side="right") - 1
    ok = (i >= 0) & ~np.isnan(t)
    v = np.full(len(t), np.nan)
    ts = np.full(len(t), np.nan)
    v[ok] = values[i[ok]]
    ts[ok] = t_scrape[i[ok]]
    return v, ts


def join_tables(requests: pa.Table, metrics: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
    """requests' key columns + server_{queue_length,running,kv_cache_usage} + scrape age."""
    cols = [c for c in JOIN_COLUMNS if c in requests.column_names]
    out = requests.select(cols)
    t_sent = np.asarray(requests.column("t_sent").to_numpy(zero_copy_only=False), float)
    cs = common_series(metrics)
    order = np.argsort(cs["t"], kind="stable")
    t_s = cs["t"][order]
    ts = np.full(len(t_sent), np.nan)
    for series in COMMON:
        v, ts = state_at(t_s, cs[series][order], t_sent)
        out = out.append_column(f"server_{series}", pa.array(v, pa.float64()))
    out = out.append_column("server_scrape_age_s", pa.array(t_sent - ts, pa.float64()))
    return out, {"metric_names": cs["names"], "scrapes": len(t_s)}


def join_requests(run_dir: str | Path, write: bool = True) -> tuple[pa.Table, dict[str, Any]]:
    """Join a run directory's requests with its server_metrics.parquet."""
    d = Path(run_dir)
    m = d / "server_metrics.parquet"
    if not m.exists():
        raise FileNotFoundError(f"{m} does not exist: run with --scrape-metrics to record the "
                                "server's /metrics")
    table, info = join_tables(pq.read_table(d / "requests.parquet"), pq.read_table(m))
    if write:
        pq.write_table(table, d / "requests_joined.parquet")
    return table, info


def decompose_ttft(t_intended: np.ndarray, t_sent: np.ndarray, t_first_token: np.ndarray,
                   queue_s: np.ndarray, prefill_s: np.ndarray) -> dict[str, np.ndarray]:
    """TTFT from t_intended = generator_lag + server_queue + server_prefill + transport
    (``analysis.ttft_parts.decompose``; ``transport`` is its ``transport_other``)."""
    from analysis.ttft_parts import decompose

    d = decompose(t_intended, t_sent, t_first_token, queue_s, prefill_s)
    d["transport"] = d["transport_other"]
    return d
