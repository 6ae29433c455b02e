"""Comparing runs: bootstrap CIs of percentile differences, Mann-Whitney U, length buckets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from analysis.compare import bootstrap_diff, compare_runs, render_comparison
from analysis.load import Run


def run_with(e2e_s: np.ndarray, inp: np.ndarray | None = None, out: np.ndarray | None = None,
             workload: dict | None = None) -> Run:
    n = len(e2e_s)
    t = np.arange(n) * 0.05
    inp = np.full(n, 100, dtype=np.int64) if inp is None else inp.astype(np.int64)
    out = np.full(n, 20, dtype=np.int64) if out is None else out.astype(np.int64)
    done = t + e2e_s
    table = pa.table({
        "status": pa.array(["ok"] * n), "t_intended": t, "t_sent": t, "slot_wait": np.zeros(n),
        "t_first_token": t + e2e_s * 0.2, "t_done": done, "output_tokens": out,
        "input_tokens": inp,
        "chunk_times": pa.array([[t[i] + e2e_s[i] * 0.2, done[i]] for i in range(n)],
                                type=pa.list_(pa.float64())),
    })
    return Run(path=Path(f"run{n}"), manifest={"workload": workload or {}}, requests=table,
               timeseries=None)


def test_bootstrap_ci_of_a_shift_covers_it_and_excludes_zero():
    rng = np.random.default_rng(0)
    a = rng.lognormal(np.log(200), 0.3, 400)
    b = rng.lognormal(np.log(200), 0.3, 400) + 50.0
    r = bootstrap_diff(a, b, 50.0, n_boot=500, seed=1)
    assert r["significant"] is True
    assert r["ci"][0] < 50.0 < r["ci"][1]
    assert r["ci"][0] > 0


def test_same_distribution_is_not_significant():
    rng = np.random.default_rng(2)
    a, b = rng.normal(100, 10, 300), rng.normal(100, 10, 300)
    r = bootstrap_diff(a, b, 90.0, n_boot=500, seed=3)
    assert r["significant"] is False and r["ci"][0] < 0 < r["ci"][1]


def test_compare_runs_flags_the_slower_run_overall_and_per_length_bucket():
    rng = np.random.default_rng(4)
    n = 240
    inp = np.where(np.arange(n) % 2 == 0, 50, 700)  # two input buckets: [32,64) and [512,1024)
    e2e_a = 0.2 + inp / 1000 + rng.normal(0, 0.01, n)
    e2e_b = e2e_a + np.where(inp == 700, 0.1, 0.0)  # B slower only for long prompts
    res = compare_runs(run_with(e2e_a, inp), run_with(e2e_b, inp), n_boot=400)
    e2e = res["overall"]["e2e"]
    assert e2e["p90"]["significant"] is True and e2e["p90"]["diff"] > 0
    assert e2e["mann_whitney_p"] < 0.05
    by_in = {c["input_lo"]: c for c in res["buckets"]}
    assert set(by_in) == {32, 512}
    assert by_in[512]["e2e"]["p50"]["diff"] == pytest.approx(100.0, abs=5)
    assert by_in[512]["e2e"]["p50"]["significant"] is True
    assert by_in[32]["e2e"]["p50"]["significant"] is False
    assert res["same_work"]["warning"] is None
    assert "ITL" in render_comparison({"baseline": "A", "comparisons": [{"rate": None, **res}]})


def test_different_work_is_called_out():
    rng = np.random.default_rng(5)
    a = run_with(rng.normal(0.3, 0.01, 100), out=np.full(100, 20), workload={"output_len": 20})
    b = run_with(rng.normal(0.3, 0.01, 100), out=np.full(100, 200), workload={"output_len": 200})
    w = compare_runs(a, b, n_boot=100)["same_work"]
    assert w["workload_differences"] == {"output_len": [20, 200]}
    assert w["output_tokens_ks_p"] < 0.01 and "differ" in w["warning"]


def test_compare_gives_per_token_itl_apart_from_chunk_gaps_without_a_test():
    # every request: 20 tokens in 2 chunks, the second after 0.8 x E2E carrying 19 tokens
    # (an even-split estimate, analysis/tokens.py): per-chunk gap 0.8 E2E, per token 0.8 E2E/19
    e2e = np.full(40, 0.1)
    res = compare_runs(run_with(e2e), run_with(e2e * 2), n_boot=50)
    o = res["overall"]
    assert o["itl"]["p50"]["a"] == pytest.approx(80.0)
    assert o["itl_per_token"]["p50"]["a"] == pytest.approx(80.0 / 19)
    assert o["itl_per_token"]["p50"]["b"] == pytest.approx(160.0 / 19)
    assert o["itl_per_token"]["p50"]["diff"] == pytest.approx(80.0 / 19)
    assert "mann_whitney_p" not in o["itl_per_token"]  # gaps are not independent: no test
    assert "ITL (per token)" in render_comparison({"baseline": "a", "comparisons": [
        {**res, "b": "b", "rate": None}]})
