"""Sweeps: when a rate counts as saturated, the probe's saturation estimate, curves and the knee.

Pure tests on hand-made records (no server); the end-to-end sweep is in test_report_e2e.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from analysis.curves import knee, percentile_ci, run_point
from analysis.load import Run
from analysis.sweep import (
    StopRules,
    parse_rates,
    saturation_check,
    saturation_throughput,
)
from loadgen.flags import UsageError


def make_run(t_int, t_done, status=None, out_tokens=16, ttft=0.01) -> Run:
    """Records of ok requests (unless status says otherwise) with the given times."""
    t_int = np.asarray(t_int, dtype=float)
    t_done = np.asarray(t_done, dtype=float)
    n = len(t_int)
    status = list(status) if status is not None else ["ok"] * n
    out = np.full(n, out_tokens, dtype=np.int64)
    chunks = [list(np.linspace(t_int[i] + ttft, t_done[i], out_tokens)) for i in range(n)]
    table = pa.table({
        "status": pa.array(status), "t_intended": t_int, "t_sent": t_int,
        "slot_wait": np.zeros(n), "t_first_token": t_int + ttft, "t_done": t_done,
        "output_tokens": out, "input_tokens": np.full(n, 32, dtype=np.int64),
        "chunk_times": pa.array(chunks, type=pa.list_(pa.float64())),
    })
    return Run(path=Path("synthetic"), manifest={}, requests=table, timeseries=None)


def fifo_server(t_int: np.ndarray, service_s: float) -> np.ndarray:
    """Completion times of a single FIFO server with a fixed service time."""
    done = np.empty_like(t_int)
    free = 0.0
    for i, t in enumerate(t_int):
        free = max(free, t) + service_s
        done[i] = free
    return done


def test_a_server_that_keeps_up_is_not_saturated():
    t = np.arange(60) * 0.1  # 10 req/s
    c = saturation_check(make_run(t, t + 0.05))
    assert c["saturated"] is False and c["reasons"] == []
    assert c["throughput_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert c["latency_growth"] == pytest.approx(1.0)


def test_an_overloaded_fifo_server_fails_both_throughput_and_latency_growth_rules():
    t = np.arange(60) * 0.1  # offered 10 req/s, capacity 5 req/s
    c = saturation_check(make_run(t, fifo_server(t, 0.2)))
    assert c["saturated"] is True
    assert c["throughput_ratio"] == pytest.approx(0.5, rel=0.02)
    # e2e_i = 0.2 + 0.1 i: medians of the last and first thirds are 5.15 s and 1.15 s
    assert c["latency_growth"] == pytest.approx(5.15 / 1.15)
    assert any("stopped following the offered rate" in r for r in c["reasons"])
    assert any("kept rising" in r for r in c["reasons"])


def test_errors_above_the_threshold_stop_the_sweep():
    t = np.arange(40) * 0.1
    status = ["http_error" if i % 10 == 0 else "ok" for i in range(40)]  # 10 % errors
    c = saturation_check(make_run(t, t + 0.05, status), StopRules(max_error_fraction=0.05))
    assert c["error_fraction"] == pytest.approx(0.1)
    assert c["saturated"] is True and "error fraction 0.100 > 0.05" in c["reasons"][0]


def test_saturation_throughput_is_the_completion_rate_between_the_10_and_90_percent_quantiles():
    done = 1.0 + np.arange(100) / 25.0  # a full queue draining at 25 req/s
    assert saturation_throughput(np.random.default_rng(0).permutation(done)) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="only 2 requests succeeded"):
        saturation_throughput(np.array([1.0, 2.0]))


def test_rates_are_parsed_sorted_and_unique_or_auto():
    assert parse_rates("8, 2,4,2") == [2.0, 4.0, 8.0]
    assert parse_rates("AUTO") is None
    for bad in ("2,x", "0,1", "inf", ""):
        with pytest.raises(UsageError, match="--rates"):
            parse_rates(bad)


def test_percentile_ci_from_order_statistics_brackets_the_estimate_and_covers_the_truth():
    x = np.random.default_rng(1).uniform(0, 1, 2000)
    est, lo, hi = percentile_ci(x, 50.0)
    assert lo < est < hi and lo < 0.5 < hi and hi - lo < 0.06
    est, lo, hi = percentile_ci(x[:30], 99.0)
    assert lo is not None and hi is None  # 30 samples cannot bound p99 from above


def _point(rate: float, value: float, lo: float | None, hi: float | None) -> dict:
    thr = 100.0
    return {"rate": rate, "achieved_rps": rate, "slo_checks": {"e2e_p99_ms": {
        "threshold_ms": thr, "value_ms": value, "ci": [lo, hi], "meets": value <= thr,
        "meets_confidently": hi is not None and hi <= thr,
        "violates_confidently": lo is not None and lo > thr}}}


def test_knee_is_the_highest_rate_meeting_the_slo_bracketed_by_confident_rates():
    pts = [_point(1, 50, 40, 60), _point(2, 70, 60, 90), _point(4, 95, 80, 120),
           _point(8, 130, 110, 150), _point(16, 90, 80, 95)]  # 16 passes again: ignored
    k = knee(pts)
    assert (k["rate"], k["low"], k["high"]) == (4, 2, 8)


def test_knee_is_unbounded_above_when_no_rate_fails_confidently():
    k = knee([_point(1, 50, 40, 60), _point(2, 105, 95, None)])
    assert (k["rate"], k["low"], k["high"]) == (1, 1, None)
    assert "not bounded above" in k["note"]
    assert knee([_point(1, 150, 120, 200)])["rate"] is None


def test_run_point_counts_goodput_per_request():
    t = np.arange(50) * 0.1
    e2e = np.where(np.arange(50) < 40, 0.05, 0.5)  # 40 fast, 10 slow requests
    p = run_point(make_run(t, t + e2e), 10.0, {"e2e_p90_ms": 100.0})
    assert p["good"] == 40 and p["good_fraction"] == pytest.approx(0.8)
    assert p["goodput_rps"] == pytest.approx(40 / (t[-1] + 0.5))
    assert p["latency_ms"]["e2e"]["p50"] == pytest.approx(50.0)
    assert p["slo_checks"]["e2e_p90_ms"]["meets"] is False  # p90 is a slow one (0.5 s)


def test_each_rate_of_a_sweep_keeps_the_engine_flags(monkeypatch, tmp_path):
    # --no-keepalive and --max-connections reach every run of the sweep (keepalive was dropped)
    import loadgen.run
    from analysis.sweep import _one_run
    from loadgen.cli import build_parser

    ns = build_parser().parse_args(["sweep", "--base-url", "http://127.0.0.1:9", "--model", "m",
                                    "--rates", "2", "--no-keepalive", "--max-connections", "3"])
    seen = []
    monkeypatch.setattr(loadgen.run, "execute", lambda spec: seen.append(spec) or "done")
    assert _one_run(ns, 2.0, 4, tmp_path, "r", ["loadgen"], True, {}) == "done"
    (spec,) = seen
    assert (spec.engine.keepalive, spec.engine.connection_limit) == (False, 3)
    assert len(spec.workload) == 4
