"""The generator's live Prometheus endpoint: correct counts, and cheap on the event loop."""

from __future__ import annotations

import time
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.telemetry.commands import options_from_argv
from loadgen.telemetry.live import LiveMetrics, ObservingWriter


def _rec(status: str = "ok", ti: float = 0.0, ts: float = 0.001, tf: float = 0.05,
         td: float = 0.2) -> SimpleNamespace:
    return SimpleNamespace(t_intended=ti, t_sent=ts, slot_wait=0.0, t_first_token=tf, t_done=td,
                           status=status)


def _scrape(live: LiveMetrics) -> dict[str, float]:
    with urllib.request.urlopen(live.url, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
                            if s.labels else "")
            out[key] = s.value
    return out


@pytest.fixture
def live():
    lm = LiveMetrics(0, "127.0.0.1", drain_interval_s=60)  # drained at scrape time here
    yield lm
    lm.close()


def test_a_scrape_shows_every_observed_request(live):
    engine = SimpleNamespace(counters=SimpleNamespace(started=7, sent=6, in_flight=2))
    live.engine_result = engine
    for _ in range(3):
        live.observe(_rec())
    live.observe(_rec("http_error", tf=float("nan")))
    m = _scrape(live)
    assert m["loadgen_requests_sent_total"] == 6 and m["loadgen_requests_in_flight"] == 2
    assert m["loadgen_requests_done_total{status=ok}"] == 3
    assert m["loadgen_requests_done_total{status=http_error}"] == 1
    assert m["loadgen_requests_failed_total"] == 1
    assert m["loadgen_ttft_seconds_count"] == 3
    assert m["loadgen_ttft_seconds_sum"] == pytest.approx(3 * 0.049)
    assert m["loadgen_e2e_seconds_bucket{le=0.25}"] == 3
    assert m["loadgen_send_lag_seconds_count"] == 4


def test_it_binds_to_loopback_by_default(live):
    assert live.httpd.server_address[0] == "127.0.0.1"


def test_observing_writer_passes_records_through(live):
    added = []
    inner = SimpleNamespace(add=added.append, n_written=5, flush=lambda: None)
    w = ObservingWriter(inner, live)
    r = _rec()
    w.add(r)
    assert added == [r] and w.n_written == 5 and live.drain() == 1


def test_the_event_loop_pays_about_a_microsecond_per_request(live):
    # The loop side is one deque.append; generous bound for a loaded 2-core machine.
    recs = [_rec() for _ in range(20000)]
    t = time.perf_counter()
    for r in recs:
        live.observe(r)
    per_call = (time.perf_counter() - t) / len(recs)
    assert per_call < 10e-6, per_call
    assert live.drain() == 20000


def test_run_flags_become_telemetry_options():
    o = options_from_argv(["run", "--model", "m", "--scrape-metrics", "--metrics-port", "0",
                           "--server-pid", "42"], "http://h:1/")
    assert o.scrape_url == "http://h:1/metrics" and o.metrics_port == 0 and o.server_pid == 42
    assert o.sample and o.metrics_host == "127.0.0.1"
    o = options_from_argv(["run", "--scrape-metrics", "http://x:2/m", "--no-telemetry"], "http://h")
    assert o.scrape_url == "http://x:2/m" and not o.sample and o.metrics_port is None
    assert options_from_argv(["run"], "http://h").scrape_url is None


def test_rows_a_worker_batched_count_as_if_observed_here(live):
    from loadgen.telemetry.live import RowBatch

    batch = RowBatch()
    for r in (_rec(), _rec(), _rec("timeout", tf=float("nan"))):
        batch.observe(r)
    rows = batch.take()
    assert len(rows) == 3 and batch.take() == []  # taken once
    live.observe_rows(rows)
    m = _scrape(live)
    assert m["loadgen_requests_done_total{status=ok}"] == 2
    assert m["loadgen_requests_done_total{status=timeout}"] == 1
    assert m["loadgen_ttft_seconds_count"] == 2 and m["loadgen_send_lag_seconds_count"] == 3
    live.close()
    assert live.summary()["final"]["loadgen_requests_done_total"] == 3
