"""Splitting one schedule over workers and merging what they report (pure parts, no processes)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.histograms import combine_described, describe_ms
from arrivals.workload import synthetic_workload
from loadgen.distributed.clock import best_offset, start_margin
from loadgen.engine import TIMESERIES_COLUMNS
from loadgen.merge import merge_timeseries
from loadgen.split import split_indices, subset_workload
from loadgen.workers import auto_workers, peak_rate


def test_single_requests_are_split_round_robin_by_index():
    parts = split_indices(10, 3)
    assert [p.tolist() for p in parts] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_every_request_goes_to_exactly_one_worker():
    sids = [None if i % 3 else f"s{i % 7}" for i in range(200)]
    parts = split_indices(200, 4, sids)
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(200))
    assert all(np.all(np.diff(p) > 0) for p in parts)  # each share keeps the schedule's order


def test_every_turn_of_a_session_stays_in_one_worker():
    rng = np.random.default_rng(0)
    sids = [f"s{x}" for x in rng.integers(0, 25, 300)]
    parts = split_indices(300, 3, sids)
    owner = {}
    for w, p in enumerate(parts):
        for i in p.tolist():
            assert owner.setdefault(sids[i], w) == w
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= max(sids.count(s) for s in set(sids))  # balanced by turns


def test_without_sessions_the_session_rule_is_round_robin():
    a = split_indices(11, 3, [None] * 11)
    b = split_indices(11, 3)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]


def test_a_session_array_of_the_wrong_length_is_rejected():
    with pytest.raises(ValueError, match="session_ids has 3 entries"):
        split_indices(5, 2, ["a", "b", "c"])


def test_a_share_keeps_the_original_times_and_items():
    wl = synthetic_workload(num_requests=9, request_rate=10.0, seed=1)
    idx = np.array([1, 4, 7])
    sub = subset_workload(wl, idx)
    assert np.array_equal(sub.t_intended, wl.t_intended[idx])
    assert sub.prompts == [wl.prompts[i] for i in idx]
    assert np.array_equal(sub.output_tokens, wl.output_tokens[idx]) and len(sub) == 3


def test_auto_workers_keeps_one_process_for_low_rates():
    wl = synthetic_workload(num_requests=200, request_rate=50.0, seed=0)
    assert auto_workers(wl, cores=8) == 1


def test_auto_workers_adds_one_per_400_req_s_of_the_busiest_second_up_to_the_cores():
    t = np.arange(3000) / 1000.0  # 1000 req/s for 3 s
    wl = synthetic_workload(num_requests=3000, request_rate=1000.0, process="constant", seed=0)
    assert peak_rate(t) == pytest.approx(1000.0, abs=1.0)  # +-1: float rounding at the edge
    assert auto_workers(wl, cores=8) == 3  # ceil(1000 / 400)
    assert auto_workers(wl, cores=2) == 2
    assert auto_workers(wl, cores=8, max_concurrency=16) == 1  # closed loop: one process


def test_auto_workers_per_process_rate_follows_the_http_client():
    from loadgen.clients.openai import ClientConfig
    from loadgen.workers import rate_per_worker

    wl = synthetic_workload(num_requests=5400, request_rate=1800.0, process="constant", seed=0)
    lean, old = ClientConfig("http://x", "m"), ClientConfig("http://x", "m", http_client="aiohttp")
    assert (rate_per_worker(lean), rate_per_worker(old)) == (1200.0, 400.0)
    assert auto_workers(wl, cores=8, rate_per_worker=rate_per_worker(lean)) == 2  # ceil(1800/1200)
    assert auto_workers(wl, cores=8, rate_per_worker=rate_per_worker(old)) == 5  # ceil(1800/400)
    assert rate_per_worker(object()) == 400.0  # a client without an http_client: aiohttp's


def test_merged_histograms_equal_the_histogram_of_all_values():
    v = np.random.default_rng(2).lognormal(-5, 1, 5001)
    parts = [describe_ms(v[w::3]) for w in range(3)]
    merged, whole = combine_described(parts), describe_ms(v)
    assert merged["hdr"] == whole["hdr"]
    for k in ("count", "p50", "p99", "p99.9", "min", "max"):
        assert merged[k] == whole[k]
    assert merged["mean"] == pytest.approx(whole["mean"], rel=1e-12)
    assert merged["std"] == pytest.approx(whole["std"], rel=1e-9)


def _row(t, intended, started, sent, done, failed, in_flight, lag, cpu):
    return (t, intended, started, sent, done, failed, in_flight, lag, cpu)


def test_time_series_of_workers_add_up_and_a_finished_worker_keeps_its_totals():
    a = [_row(1.0, 10, 10, 10, 8, 0, 2, 1.5, 0.1), _row(2.0, 20, 20, 20, 20, 1, 0, 0.5, 0.1)]
    b = [_row(1.001, 10, 10, 10, 10, 0, 0, 3.0, 0.2)]
    m = merge_timeseries([a, b])
    col = {c: i for i, c in enumerate(TIMESERIES_COLUMNS)}
    assert len(m) == 2
    assert m[0][col["done"]] == 18 and m[0][col["in_flight"]] == 2 and m[0][col["loop_lag_max_ms"]] == 3.0
    assert m[1][col["done"]] == 30 and m[1][col["sent"]] == 30  # b's last totals carried
    assert m[1][col["cpu_s"]] == pytest.approx(0.1) and m[1][col["loop_lag_max_ms"]] == 0.5


def test_clock_offset_is_taken_from_the_shortest_round_trip():
    # worker clock = driver + 5 s; the second round is the shortest (2 ms)
    rounds = [(0.0, 5.004, 0.010), (1.0, 6.001, 1.002), (2.0, 7.020, 2.030)]
    r = best_offset(rounds)
    assert r["offset_s"] == pytest.approx(5.0) and r["rtt_s"] == pytest.approx(0.002)
    assert r["error_bound_s"] == pytest.approx(0.001)
    assert start_margin([0.002, 0.2], floor_s=1.0) == pytest.approx(4.0)
    assert start_margin([0.001], floor_s=1.0) == 1.0


def test_one_late_worker_makes_the_run_invalid_even_when_the_runs_p99_passes():
    from analysis.metrics import Derived
    from analysis.selfcheck import verdict

    e = np.zeros(0)
    lag = np.full(1000, 0.0005)  # 0.5 ms everywhere: the run's p99 passes
    d = Derived(ok=np.ones(1000, bool), sent=np.ones(1000, bool), ttft_sent=e, ttft_intended=e,
                e2e_sent=e, e2e_intended=e, tpot=e, itl=e, itl_token=e, token_basis={},
                send_lag=lag, slot_wait=lag * 0, input_tokens=e, output_tokens=e)
    v = verdict(d, max_send_lag_ms=5.0, burst=False, interrupted=None, n_intended=1000,
                n_recorded=1000, lag_p99_by_worker={"0": 0.5, "1": 0.5, "2": 9.0})
    assert v["verdict"] == "INVALID"
    assert v["reasons"] == ["generator worker(s) fell behind: worker 2 send lag p99 9.00 ms > 5 ms"]
    ok = verdict(d, max_send_lag_ms=5.0, burst=False, interrupted=None, n_intended=1000,
                 n_recorded=1000, lag_p99_by_worker={"0": 0.5, "1": 0.6})
    assert ok["verdict"] == "VALID"


def test_workers_flag_takes_a_count_or_auto_and_rejects_zero(capsys):
    from loadgen.cli import build_parser

    p = build_parser()
    base = ["run", "--model", "m"]
    assert p.parse_args(base).workers == "auto"
    assert p.parse_args([*base, "--workers", "3"]).workers == 3
    with pytest.raises(SystemExit) as e:
        p.parse_args([*base, "--workers", "0"])
    assert e.value.code == 2 and "--workers must be >= 1" in capsys.readouterr().err


def test_fewer_concurrency_slots_than_workers_is_a_usage_error(capsys):
    from loadgen.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", "--model", "m", "--max-concurrency", "1", "--workers", "2", "--num-prompts", "4"])
    assert e.value.code == 2
    assert "--max-concurrency 1 is smaller than --workers 2" in capsys.readouterr().err
