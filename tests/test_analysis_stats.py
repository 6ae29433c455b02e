"""Per-run statistics (analysis/ci, window, length, fit, slo, smoothness, run_analysis):
each checked against a known distribution, a known model or a hand-computed case."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from analysis.ci import ci_ranks, percentile_ci, samples_needed
from analysis.fit import fit_e2e, fit_ttft, relative_latency
from analysis.length import length_buckets, log2_edges
from analysis.load import Run
from analysis.run_analysis import TOP_LEVEL_KEYS, analyze
from analysis.slo import SLO, evaluate_slo, parse_slo, slo_report
from analysis.smoothness import fluidity_counts, fluidity_index, smoothness, stall_time
from analysis.tokens import per_token_itl
from analysis.window import choose_window, detect_window, parse_window
from loadgen.records import Record, rows_to_table

# ---------------------------------------------------------------- percentile CIs


def test_median_ci_ranks_for_100_samples_match_the_binomial_table():
    # Classic table value (e.g. Conover, Practical Nonparametric Statistics): n=100, 95 %:
    # [X_(40), X_(61)], exact coverage 0.9648.
    lo, hi, cov = ci_ranks(100, 0.5, 0.95)
    assert (lo, hi) == (40, 61)
    assert cov == pytest.approx(0.9648, abs=1e-4)


@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
def test_ci_covers_the_true_percentile_of_an_exponential_about_95_percent_of_the_time(p):
    # 2000 independent samples of n=500 from Exp(1), whose p-quantile is -ln(1-p). The count of
    # intervals covering it is Binomial(2000, c) with c the exact coverage of the ranks
    # (>= 0.95); we allow 4 binomial standard deviations (~ +-2 % at c=0.95).
    reps, n = 2000, 500
    rng = np.random.default_rng(123)
    x = np.sort(rng.exponential(1.0, size=(reps, n)), axis=1)
    lo, hi, c = ci_ranks(n, p, 0.95)
    assert c >= 0.95
    q = -math.log(1 - p)
    lo_v = x[:, lo - 1] if lo >= 1 else np.full(reps, -np.inf)
    hi_v = x[:, hi - 1] if hi <= n else np.full(reps, np.inf)
    covered = int(((lo_v <= q) & (q <= hi_v)).sum())
    sd = math.sqrt(reps * c * (1 - c))
    assert abs(covered - reps * c) <= 4 * sd, (covered, reps * c, sd)


def test_p99_has_no_upper_bound_below_368_samples():
    # 1 - 0.99^n >= 0.975 first holds at n = 368 (ln 0.025 / ln 0.99 = 367.0).
    small = percentile_ci(np.arange(367.0), 0.99)
    big = percentile_ci(np.arange(368.0), 0.99)
    assert math.isnan(small.hi) and small.value == 363.0  # X_(ceil(367*0.99)) = X_(364)
    assert big.hi == 367.0 and big.lo <= big.value <= big.hi
    assert samples_needed(0.99) == 368
    assert samples_needed(0.5) == 6  # 0.5^6 = 0.0156 <= 0.025 < 0.5^5


def test_samples_needed_for_a_precise_p99_is_near_the_normal_approximation():
    n = samples_needed(0.99, tolerance=0.002)
    approx = 1.96**2 * 0.99 * 0.01 / 0.002**2  # 9508
    assert abs(n - approx) / approx < 0.15
    lo, hi, _ = ci_ranks(n, 0.99)
    assert lo / n >= 0.988 and hi / n <= 0.992
    lo1, hi1, _ = ci_ranks(n - 1, 0.99)
    assert lo1 / (n - 1) < 0.988 or hi1 / (n - 1) > 0.992  # and n is the smallest


# ---------------------------------------------------------------- steady window


def test_window_string_parsing_accepts_open_ends_and_rejects_garbage():
    assert parse_window("5:60") == (5.0, 60.0)
    assert parse_window(":30") == (None, 30.0)
    with pytest.raises(ValueError, match="START:END"):
        parse_window("5-60")
    with pytest.raises(ValueError, match="after START"):
        parse_window("9:3")


def test_detected_window_skips_the_ramp_and_the_drain():
    # 100 arrivals every 0.1 s, each lasting 0.35 s: 3-4 in flight at steady state (level 3),
    # 0,1,2 at the first three arrivals. Drain: median e2e 0.35 s before the last arrival.
    ti = np.arange(100) * 0.1
    done = ti + 0.35
    w = detect_window(ti, ti, done, np.ones(100, bool))
    assert w.method == "detected"
    assert w.start_s == pytest.approx(0.3)
    assert w.end_s == pytest.approx(9.9 - 0.35)
    assert w.n_requests == int(((ti >= 0.3 - 1e-9) & (ti <= 9.55)).sum()) == 93


def test_explicit_window_counts_requests_inside_it():
    t = rows_to_table([Record(i, t_intended=float(i), status="ok").row() for i in range(10)])
    w = choose_window(t, "2:5")
    assert (w.start_s, w.end_s, w.method, w.n_requests) == (2.0, 5.0, "explicit", 4)


# ---------------------------------------------------------------- length buckets and fits


def test_log2_buckets_cover_the_data_and_count_each_cell():
    assert log2_edges(np.array([20, 380])) == [16, 32, 64, 128, 256, 512]
    inp = np.array([20, 30, 200, 300])
    out = np.array([5, 5, 5, 9])
    b = length_buckets(inp, out, np.full(4, 0.01), np.full(4, 0.1),
                       [np.array([0.001, 0.003])] * 4)
    cells = {(c["input_lo"], c["output_lo"]): c for c in b["cells"]}
    assert b["output_edges"] == [4, 8, 16]
    assert cells[(16, 4)]["n"] == 2 and cells[(128, 4)]["n"] == 1 and cells[(256, 8)]["n"] == 1
    assert sum(c["n"] for c in b["cells"]) == 4
    assert cells[(16, 4)]["e2e_p50_ms"] == pytest.approx(100.0)
    assert cells[(16, 4)]["itl_p99_ms"] == pytest.approx(3.0)
    assert cells[(16, 4)]["itl_token_p50_ms"] is None  # no per-token gaps given


def test_length_buckets_report_per_token_itl_apart_from_chunk_gaps():
    # two requests in one bucket; chunks 10 ms apart, each chunk after the first carries 2
    # tokens: per-chunk ITL 10 ms, per-token 5 ms
    chunks = np.array([0.0, 0.010, 0.020])
    counts = np.array([1, 2, 2])
    b = length_buckets(np.array([20, 20]), np.array([5, 5]), np.full(2, 0.01),
                       np.full(2, 0.02), [np.diff(chunks)] * 2,
                       [per_token_itl(chunks, counts)] * 2)
    (c,) = b["cells"]
    assert c["itl_p50_ms"] == pytest.approx(10.0) and c["itl_p99_ms"] == pytest.approx(10.0)
    assert c["itl_token_p50_ms"] == pytest.approx(5.0)
    assert c["itl_token_p99_ms"] == pytest.approx(5.0)


def test_median_regression_recovers_known_costs_despite_a_heavy_tail():
    # e2e = 20 ms + 0.04 ms/input token + 12 ms/output token, noise: Gaussian (2 ms) plus 10 %
    # of requests delayed by 0-2 s (queueing outliers). Tolerance: 5 % on b and c, 3 ms on a.
    rng = np.random.default_rng(5)
    n = 600
    inp = rng.integers(10, 4000, n)
    out = rng.integers(1, 300, n)
    y = 20 + 0.04 * inp + 12 * out + rng.normal(0, 2, n)
    late = rng.random(n) < 0.1
    y[late] += rng.uniform(0, 2000, late.sum())
    f = fit_e2e(y, inp, out, n_boot=60, seed=1)
    a, b, c = f.coef
    assert abs(a - 20) < 3 and abs(b - 0.04) < 0.002 and abs(c - 12) < 0.6
    lo, hi = f.ci95[2]
    assert lo < c < hi and hi - lo < 1.0  # a real, narrow interval around the estimate
    ratio, resid = relative_latency(f, y, inp, out)
    assert np.median(ratio[~late]) == pytest.approx(1.0, abs=0.02)
    assert np.median(resid[late]) > 600  # delays ~ U(0, 2 s): median ~1 s, sd of median ~0.1 s


def test_ttft_fit_recovers_the_prefill_cost():
    rng = np.random.default_rng(6)
    inp = rng.integers(10, 2000, 300)
    y = 8 + 0.05 * inp + rng.normal(0, 1, 300)
    f = fit_ttft(y, inp, n_boot=40)
    assert f.names == ("a_ms", "b_ms_per_input_token")
    assert abs(f.coef[0] - 8) < 0.6 and abs(f.coef[1] - 0.05) < 0.001


# ---------------------------------------------------------------- SLO, goodput, smoothness


def test_slo_attainment_goodput_and_violations_hand_computed():
    slo = parse_slo("ttft_ms=100,tpot_ms=20,e2e_base_ms=50,e2e_per_output_ms=10")
    ok = np.array([True, True, True, True, False])
    ttft = np.array([50.0, 150.0, 80.0, 90.0, np.nan])
    tpot = np.array([10.0, 10.0, 30.0, np.nan, np.nan])  # nan: one-token answer, no TPOT
    out = np.array([10, 10, 10, 1, 10])
    e2e = np.array([140.0, 240.0, 120.0, 70.0, np.nan])  # limits 150, 150, 150, 60
    met, viol = evaluate_slo(slo, ok=ok, ttft_ms=ttft, e2e_ms=e2e, tpot_ms=tpot,
                             max_itl_ms=np.full(5, np.nan), input_tokens=np.zeros(5),
                             output_tokens=out)
    assert met.tolist() == [True, False, False, False, False]
    assert viol == {"failed": 1, "ttft_ms": 1, "tpot_ms": 1, "e2e_length_aware": 2}
    rep = slo_report(slo, met, viol, window_s=2.0)
    assert rep["attainment"] == pytest.approx(0.2) and rep["goodput_rps"] == pytest.approx(0.5)


def test_slo_rejects_half_a_length_aware_pair_and_unknown_keys():
    with pytest.raises(ValueError, match="both"):
        SLO(e2e_base_ms=10)
    with pytest.raises(ValueError, match="KEY=MS"):
        parse_slo("p99=3")


def test_fluidity_index_hand_computed():
    # target 10 ms; gaps 5, 5, 35, 10 ms. Deadlines (from the first token) 10, 20, 30, 40:
    # tokens at 5, 10 bank 10 ms slack; the third arrives at 45, past the deadlines 30 and 40
    # (misses = floor((35 - 10 - 10)/10) + 1 = 2), deadlines re-anchored at 45; the fourth at
    # 55 meets 55. missed 2 of 5 -> 0.6.
    gaps = np.array([5, 5, 35, 10]) / 1e3
    assert fluidity_counts(gaps, 0.010) == (2, 5)
    assert fluidity_index(gaps, 0.010) == pytest.approx(0.6)
    assert fluidity_index(np.full(8, 0.009), 0.010) == 1.0
    # with a prefill deadline of 50 ms the first interval (TTFT 45 ms) is on time
    assert fluidity_counts(np.array([45, 10]) / 1e3, 0.010, prefill_deadline=0.050) == (0, 2)


def test_stall_ratio_hand_computed():
    # chunks at 0, 10, 20, 60 ms with a 10 ms cadence: 30 ms of the 60 ms stream is stall.
    c = np.array([0, 10, 20, 60]) / 1e3
    s, w = stall_time(c, 0.010)
    assert s == pytest.approx(0.030) and w == pytest.approx(0.060)
    sm = smoothness([c, np.array([0, 10, 20]) / 1e3], 0.010)
    assert sm["stall_ratio"] == pytest.approx(0.030 / 0.080)
    assert sm["fully_fluid_share"] == 0.5 and sm["n_requests"] == 2


# ---------------------------------------------------------------- analyze() and the command


def _synthetic_run(tmp_path, n=80, seed=0) -> Run:
    """A run whose requests follow ttft = 6 + 0.05*in ms, itl = 5 ms exactly, one per 50 ms."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        inp, out = int(rng.integers(20, 400)), int(rng.integers(2, 40))
        t0 = 0.05 * i
        ft = t0 + (6 + 0.05 * inp) / 1e3
        chunks = [ft + 0.005 * k for k in range(out)]
        recs.append(Record(i, t_intended=t0, t_sent=t0, t_first_byte=ft, t_first_token=ft,
                           t_done=chunks[-1], status="ok" if i != 7 else "timeout",
                           input_tokens=inp, output_tokens=out, n_chunks=out,
                           chunk_times=chunks, max_itl=0.005).row())
    table = rows_to_table(recs)
    (tmp_path / "manifest.json").write_bytes(orjson.dumps({"status": "complete"}))
    pq.write_table(table, tmp_path / "requests.parquet")
    return Run(path=tmp_path, manifest={"status": "complete"}, requests=table, timeseries=None)


def test_analyze_returns_exactly_the_contract_keys_and_right_numbers(tmp_path):
    run = _synthetic_run(tmp_path)
    a = analyze(run, slo="ttft_ms=20.02,tpot_ms=6", window="all", n_boot=30)
    assert tuple(a) == TOP_LEVEL_KEYS
    orjson.dumps(a)  # JSON-safe
    assert a["window"] == {"start_s": 0.0, "end_s": pytest.approx(3.95), "method": "all",
                           "n_requests": 80}
    assert set(a["percentiles_ci"]) == {"ttft", "e2e", "itl", "itl_per_token", "tpot",
                                        "ttft_intended", "e2e_intended"}
    assert set(a["percentiles_ci"]["ttft"]["p99"]) == {"value_ms", "lo_ms", "hi_ms", "n"}
    assert a["percentiles_ci"]["itl"]["p50"]["value_ms"] == pytest.approx(5.0, abs=1e-6)
    assert a["percentiles_ci"]["ttft"]["p50"]["n"] == 79  # the timeout is left out
    f = a["fits"]
    assert f["ttft"]["b_ms_per_input_token"] == pytest.approx(0.05, abs=1e-6)
    assert f["e2e"]["c_ms_per_output_token"] == pytest.approx(5.0, abs=1e-6)
    assert set(f["e2e"]["ci95"]) == {"a_ms", "b_ms_per_input_token", "c_ms_per_output_token"}
    assert sum(c["n"] for c in a["length_buckets"]["cells"]) == 79
    # ttft = 6 + 0.05*input <= 20.02 ms holds for input <= 280; tpot = 5 ms always passes; the
    # timeout (request 7) counts against attainment
    inp = run.requests.column("input_tokens").to_numpy()
    status = run.requests.column("status").to_numpy(zero_copy_only=False)
    expect_met = int(((inp <= 280) & (status == "ok")).sum())
    assert a["slo"]["n_met"] == expect_met and a["slo"]["attainment"] == expect_met / 80
    assert a["slo"]["violations_by_metric"] == {"failed": 1, "ttft_ms": 79 - expect_met,
                                                "tpot_ms": 0}
    assert a["slo"]["goodput_rps"] == pytest.approx(a["slo"]["n_met"] / 3.95)
    assert a["smoothness"]["fluidity_index"] == 1.0 and a["smoothness"]["stall_ratio"] == 0.0


def test_analyze_command_writes_analysis_json(tmp_path, capsys):
    from loadgen.cli import main

    _synthetic_run(tmp_path)
    rc = main(["analyze", str(tmp_path), "--slo", "ttft_ms=20", "--window", "1:3",
               "--n-boot", "20"])
    assert rc == 0
    a = orjson.loads((tmp_path / "analysis.json").read_bytes())
    assert a["window"]["method"] == "explicit" and a["window"]["n_requests"] == 41
    text = capsys.readouterr().out
    assert "fits (median regression" in text and "attainment" in text
    with pytest.raises(SystemExit) as e:
        main(["analyze", str(tmp_path), "--slo", "nonsense"])
    assert e.value.code == 2
