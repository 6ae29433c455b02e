"""Scraping a server's Prometheus ``/metrics`` during a run (a thread, off the event loop).

Each scrape is parsed with ``prometheus_client.parser.text_string_to_metric_families`` and
kept as long-format rows ``(t, scrape, metric, labels, value)``: ``metric`` is the sample name
(counters carry their ``_total``/``_created`` suffixes, histograms ``_bucket``/``_sum``/
``_count``), ``labels`` is the label set as sorted JSON. ``t`` is the midpoint of the HTTP
exchange on time.perf_counter, shifted to the run's t0.

``COMMON`` maps each runtime's names to three common series (summed over label sets):
queue_length (waiting requests), running (sequences in the running batch) and kv_cache_usage
(fraction 0..1 of the KV cache in use).
"""

from __future__ import annotations

import math
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from prometheus_client.parser import text_string_to_metric_families

from loadgen.telemetry.spool import Spool

COMMON: dict[str, tuple[str, ...]] = {
    "queue_length": (
        "sim:num_requests_waiting", "vllm:num_requests_waiting", "llamacpp:requests_deferred",
        "sglang:num_queue_reqs", "tgi_queue_size", "nv_inference_pending_request_count",
    ),
    "running": (
        "sim:num_requests_running", "vllm:num_requests_running", "llamacpp:requests_processing",
        "sglang:num_running_reqs", "tgi_batch_current_size",
    ),
    "kv_cache_usage": (
        "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "llamacpp:kv_cache_usage_ratio",
        "sglang:token_usage",
    ),
}
SCHEMA = pa.schema([("t", pa.float64()), ("scrape", pa.int32()), ("metric", pa.string()),
                    ("labels", pa.string()), ("value", pa.float64())])


def parse_metrics(text: str) -> list[tuple[str, str, float]]:
    """(sample name, labels as sorted JSON, value) for every sample in a Prometheus text page."""
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.append((s.name, orjson.dumps(s.labels, option=orjson.OPT_SORT_KEYS).decode(),
                        float(s.value)))
    return out


@dataclass
class Scraper:
    """GET ``url`` every ``interval_s`` in a thread; ``table(t0)`` gives the rows."""

    url: str
    interval_s: float = 1.0
    timeout_s: float = 2.0
    t: list[float] = field(default_factory=list)
    scrape: list[int] = field(default_factory=list)
    metric: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    n_ok: int = 0
    n_failed: int = 0
    last_error: str | None = None
    durations: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    spool: Spool | None = None  # also append each scrape here as it is taken
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def scrape_once(self) -> bool:
        t_a = time.perf_counter()
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as r:
                body = r.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as e:
            self.n_failed += 1
            self.last_error = f"GET {self.url}: {e}"
            return False
        t_b = time.perf_counter()
        try:
            samples = parse_metrics(body)
        except ValueError as e:
            self.n_failed += 1
            self.last_error = f"GET {self.url}: not Prometheus text format ({e})"
            return False
        k, tm = self.n_ok, (t_a + t_b) / 2
        for name, labels, value in samples:
            self.t.append(tm)
            self.scrape.append(k)
            self.metric.append(name)
            self.labels.append(labels)
            self.value.append(value)
        self.n_ok += 1
        self.durations.append(t_b - t_a)
        if self.spool is not None:
            self.spool.write({"t_mono": tm, "scrape": k, "samples": samples})
        return True

    def start(self) -> Scraper:
        self._thread = threading.Thread(target=self._run, name="telemetry-scraper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)

    def _run(self) -> None:
        if self.spool is not None:
            self.spool.meta(kind="scraper", pid=os.getpid(), url=self.url,
                            interval_s=self.interval_s)
        c0 = time.thread_time()
        while True:
            t = time.perf_counter()
            self.scrape_once()
            self.cpu_s = time.thread_time() - c0
            if self._stop.wait(max(self.interval_s - (time.perf_counter() - t), 0.0)):
                break

    def table(self, t0: float) -> pa.Table:
        n = len(self.value)
        t = np.asarray(self.t[:n], dtype=np.float64) - t0
        return pa.Table.from_arrays(
            [pa.array(t), pa.array(self.scrape[:n], pa.int32()), pa.array(self.metric[:n]),
             pa.array(self.labels[:n]), pa.array(self.value[:n], pa.float64())], schema=SCHEMA)

    def summary(self) -> dict[str, Any]:
        d = self.durations
        return {"url": self.url, "interval_s": self.interval_s, "scrapes_ok": self.n_ok,
                "scrapes_failed": self.n_failed, "last_error": self.last_error,
                "thread_cpu_s": self.cpu_s,
                "mean_scrape_ms": 1e3 * sum(d) / len(d) if d else None}


def scrapes_table(scrapes: list[dict[str, Any]], t0: float) -> pa.Table:
    """Spooled scrapes (``{"t_mono", "scrape", "samples": [[metric, labels, value], ...]}``)
    as server_metrics.parquet's long table, the layout of ``Scraper.table``."""
    t, k, metric, labels, value = [], [], [], [], []
    for sc in scrapes:
        for name, lab, v in sc["samples"]:
            t.append(sc["t_mono"] - t0)
            k.append(sc["scrape"])
            metric.append(name)
            labels.append(lab)
            value.append(v)
    return pa.Table.from_arrays(
        [pa.array(t, pa.float64()), pa.array(k, pa.int32()), pa.array(metric, pa.string()),
         pa.array(labels, pa.string()), pa.array(value, pa.float64())], schema=SCHEMA)


def common_series(table: pa.Table) -> dict[str, Any]:
    """Per scrape: t and the common series (NaN where the server reports none of the names).

    Returns ``{"t": array, "queue_length": array, ..., "names": {series: metric used}}``;
    values of one metric are summed over its label sets (e.g. vLLM's per-engine gauges).
    """
    scrape = np.asarray(table.column("scrape").to_numpy(zero_copy_only=False))
    t = np.asarray(table.column("t").to_numpy(zero_copy_only=False))
    metric = np.asarray(table.column("metric").to_pylist(), dtype=object)
    value = np.asarray(table.column("value").to_numpy(zero_copy_only=False))
    ids, first = np.unique(scrape, return_index=True)
    out: dict[str, Any] = {"scrape": ids, "t": t[first], "names": {}}
    for series, names in COMMON.items():
        col = np.full(len(ids), math.nan)
        for name in names:
            m = metric == name
            if m.any():
                pos = np.searchsorted(ids, scrape[m])
                col = np.zeros(len(ids))
                np.add.at(col, pos, value[m])
                present = np.zeros(len(ids), bool)
                present[pos] = True
                col[~present] = math.nan
                out["names"][series] = name
                break
        out[series] = col
    return out
