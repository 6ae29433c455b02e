"""The generator's own Prometheus endpoint (``--metrics-port``), cheap for the event loop.

On the event loop a finished request costs one ``deque.append`` of a small tuple
(``LiveMetrics.observe``, called by ``ObservingWriter.add``); nothing else. A daemon thread
drains that deque into prometheus-client histograms once a second, and again just before each
scrape; ``sent``, ``started`` and ``in_flight`` are read from the engine's plain counters at
scrape time. The registry is private (a ``CollectorRegistry`` of its own) and the HTTP server
binds to 127.0.0.1 unless told otherwise.

With worker processes (loadgen/workers.py) the parent serves the endpoint and the workers
feed it: each worker's event loop pays the same one append per finished request (into a
``RowBatch``), and once a second, with the progress message it sends anyway, it hands the
batch to the parent over the job socket; the parent puts the rows into its ``LiveMetrics``
queue (``observe_rows``) and sums the workers' last counters into ``engine_result``. Why not
prometheus-client's multiprocess mode: see docs/telemetry.md.

Metric names (all prefixed ``loadgen_``): see docs/telemetry.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 25.0, 60.0, 120.0, 300.0, math.inf)
LAG_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
               1.0, math.inf)


class _EngineCounters(Collector):
    """Reads the engine's counters at scrape time (after draining the finished requests)."""

    def __init__(self, live: LiveMetrics) -> None:
        self.live = live

    def collect(self) -> Iterator[Any]:
        self.live.drain()
        c = getattr(self.live.engine_result, "counters", None)
        started = CounterMetricFamily("loadgen_requests_started", "Requests whose time came.")
        sent = CounterMetricFamily("loadgen_requests_sent", "Requests sent to the server.")
        inflight = GaugeMetricFamily("loadgen_requests_in_flight", "Requests started, not done.")
        started.add_metric([], c.started if c else 0)
        sent.add_metric([], c.sent if c else 0)
        inflight.add_metric([], c.in_flight if c else 0)
        yield from (started, sent, inflight)


class LiveMetrics:
    """A private registry, its HTTP server, and the hand-off from the event loop."""

    def __init__(self, port: int, host: str = "127.0.0.1", drain_interval_s: float = 1.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.engine_result: Any = None
        self._q: deque[tuple] = deque()
        self._lock = threading.Lock()
        self.drained = 0
        self.drain_cpu_s = 0.0
        self.final: dict[str, float] | None = None  # counts() at close
        self.registry.register(_EngineCounters(self))
        r = self.registry
        self.done = Counter("loadgen_requests_done", "Requests finished, by status.",
                            ["status"], registry=r)
        self.failed = Counter("loadgen_requests_failed", "Requests finished with status != ok.",
                              registry=r)
        self.send_lag = Histogram("loadgen_send_lag_seconds", "t_sent - t_intended - slot_wait.",
                                  buckets=LAG_BUCKETS, registry=r)
        self.ttft = Histogram("loadgen_ttft_seconds", "Time to first token from t_sent (ok).",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.ttft_intended = Histogram("loadgen_ttft_intended_seconds",
                                       "Time to first token from t_intended (ok).",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("loadgen_e2e_seconds", "End-to-end latency from t_sent (ok).",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.httpd, self._http_thread = start_http_server(port, addr=host, registry=r)
        self.host, self.port = host, self.httpd.server_address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(drain_interval_s,),
                                        name="live-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def observe(self, rec: Any) -> None:
        """Event-loop side: one append (thread-safe in CPython)."""
        self._q.append((rec.t_intended, rec.t_sent, rec.slot_wait, rec.t_first_token,
                        rec.t_done, rec.status))

    def observe_rows(self, rows: list[tuple]) -> None:
        """Rows taken from a worker's ``RowBatch`` (same tuples as ``observe`` queues)."""
        self._q.extend(rows)

    def bind(self, engine_result: Any) -> None:
        self.engine_result = engine_result

    def drain(self) -> int:
        """Move finished requests into the histograms (any thread)."""
        c0 = time.thread_time()
        n = 0
        with self._lock:
            q = self._q
            while q:
                ti, ts, slot, tf, td, status = q.popleft()
                n += 1
                self.done.labels(status).inc()
                if ts == ts:  # not NaN: it was sent
                    self.send_lag.observe(max(ts - ti - slot, 0.0))
                if status != "ok":
                    self.failed.inc()
                    continue
                if tf == tf:
                    self.ttft.observe(tf - ts)
                    self.ttft_intended.observe(tf - ti)
                self.e2e.observe(td - ts)
            self.drained += n
            self.drain_cpu_s += time.thread_time() - c0
        return n

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.drain()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(5)
        self.drain()
        self.final = self.counts()
        self.httpd.shutdown()
        self.httpd.server_close()

    def counts(self) -> dict[str, float]:
        """The endpoint's counters as a scrape would show them now (after a drain)."""
        self.drain()
        r = self.registry
        out = {name: r.get_sample_value(name) or 0.0 for name in
               ("loadgen_requests_started_total", "loadgen_requests_sent_total",
                "loadgen_requests_failed_total", "loadgen_e2e_seconds_count")}
        out["loadgen_requests_done_total"] = sum(
            s.value for m in self.done.collect() for s in m.samples if s.name.endswith("_total"))
        return out

    def summary(self) -> dict[str, Any]:
        return {"url": self.url, "requests_drained": self.drained,
                "drain_thread_cpu_s": self.drain_cpu_s,
                "drain_us_per_request": 1e6 * self.drain_cpu_s / self.drained
                if self.drained else None,
                "final": self.final}


class RowBatch:
    """A worker process's side of the parent's endpoint: ``observe`` is the same single append
    on the event loop as ``LiveMetrics.observe``; ``take`` (once a second, any thread) empties
    it for sending. The parent's drain thread does the histogram work."""

    def __init__(self) -> None:
        self._q: deque[tuple] = deque()

    def observe(self, rec: Any) -> None:
        self._q.append((rec.t_intended, rec.t_sent, rec.slot_wait, rec.t_first_token,
                        rec.t_done, rec.status))

    def take(self) -> list[tuple]:
        q = self._q
        return [q.popleft() for _ in range(len(q))]


class ObservingWriter:
    """A RecordWriter that also hands each record to LiveMetrics (same interface)."""

    def __init__(self, inner: Any, live: LiveMetrics) -> None:
        self.inner, self._observe, self._add = inner, live.observe, inner.add

    def add(self, rec: Any) -> None:
        self._observe(rec)
        self._add(rec)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
