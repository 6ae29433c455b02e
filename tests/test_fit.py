"""Fitting inter-arrival times and lengths, fitted models, and `loadgen workload fit`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from arrivals.fit import (
    FAMILIES,
    WorkloadModel,
    compare,
    fit_interarrivals,
    fit_trace,
    model_workload,
)
from arrivals.fit_lengths import fit_lengths
from arrivals.traces import read_trace

DATA = Path("/work/shared/data")
BURSTGPT = DATA / "burstgpt" / "BurstGPT_1_rows1-400.csv"
AZURE_CONV = DATA / "azure_llm_2023" / "AzureLLMInferenceTrace_conv_rows1-5000.csv"
AZURE_CODE = DATA / "azure_llm_2023" / "AzureLLMInferenceTrace_code_rows1-4000.csv"
TOKEN_STATS = DATA / "token_stats" / "sharegpt_8k_filtered_stats_llama2_tokenizer_rows1-15000.csv"


def need(p: Path) -> Path:
    if not p.is_file():
        pytest.skip(f"real data sample {p} is absent (see /work/shared/data/README.md)")
    return p


# ---- synthetic ground truth -----------------------------------------------------------------

@pytest.mark.parametrize("shape", [0.5, 2.5])
def test_a_gamma_sample_is_identified_as_gamma_with_its_shape(shape):
    g = np.random.default_rng(7).gamma(shape, 0.3, size=4000)
    fit = fit_interarrivals(g)
    assert fit.best.family == "gamma"
    assert fit.best.params["shape"] == pytest.approx(shape, rel=0.08)
    assert fit.best.mean == pytest.approx(g.mean(), rel=1e-6)
    assert [f.aic for f in fit.fits] == sorted(f.aic for f in fit.fits)


def test_a_weibull_sample_is_identified_as_weibull():
    g = 2.0 * np.random.default_rng(3).weibull(0.6, size=4000)
    fit = fit_interarrivals(g)
    assert fit.best.family == "weibull"
    assert fit.best.mle_params["shape"] == pytest.approx(0.6, rel=0.08)


def test_exponential_gaps_prefer_the_one_parameter_family_or_its_nested_equivalents():
    g = np.random.default_rng(5).exponential(2.0, size=3000)
    fit = fit_interarrivals(g)
    # gamma and Weibull contain the exponential (k = 1): their k must come out near 1
    assert fit.get("gamma").params["shape"] == pytest.approx(1.0, abs=0.08)
    assert fit.get("weibull").params["shape"] == pytest.approx(1.0, abs=0.08)
    assert fit.get("exponential").ks_pvalue > 0.01


def test_zero_gaps_are_a_point_mass_and_the_model_mean_counts_them():
    rng = np.random.default_rng(0)
    g = np.where(rng.random(2000) < 0.3, 0.0, rng.exponential(1.0, 2000))
    fit = fit_interarrivals(g)
    assert fit.p_zero == pytest.approx(0.3, abs=0.03)
    assert fit.fitted_mean() == pytest.approx(g.mean(), rel=1e-9)
    s = fit.sample(20000, np.random.default_rng(1))
    assert (s == 0).mean() == pytest.approx(fit.p_zero, abs=0.015)


def test_too_few_gaps_is_an_error_that_says_so():
    with pytest.raises(ValueError, match="at least 3"):
        fit_interarrivals(np.array([1.0, 2.0]))


# ---- real traces ----------------------------------------------------------------------------

@pytest.mark.parametrize("path,fmt", [(BURSTGPT, "burstgpt"), (AZURE_CONV, "azure"),
                                      (AZURE_CODE, "azure")])
def test_real_trace_fit_picks_a_family_and_the_fitted_mean_gap_is_the_sample_mean(path, fmt):
    tr = read_trace(need(path), fmt)
    model = fit_trace(tr)
    ok_t = np.sort(tr.t[tr.ok])
    gaps = np.diff(ok_t)
    assert model.iat.best.family in FAMILIES
    assert model.iat.best.aic == min(f.aic for f in model.iat.fits)
    assert model.iat.fitted_mean() == pytest.approx(gaps.mean(), rel=1e-6)
    assert model.rate == pytest.approx((len(ok_t) - 1) / (ok_t[-1] - ok_t[0]), rel=1e-6)
    assert 0 <= model.iat.best.ks_stat < 0.2


def test_azure_conversation_gaps_are_near_poisson():
    model = fit_trace(read_trace(need(AZURE_CONV), "azure"))
    assert model.iat.best.family in ("gamma", "weibull", "exponential")
    assert model.iat.best.cv == pytest.approx(model.iat.sample_cv, rel=0.1)
    assert model.iat.best.ks_stat < 0.05


def test_burstgpt_gaps_are_burstier_than_poisson():
    model = fit_trace(read_trace(need(BURSTGPT), "burstgpt"))
    assert model.iat.sample_cv > 2 and model.iat.best.family != "exponential"
    assert model.source["failed_left_out"] == 17


# ---- lengths and their correlation ----------------------------------------------------------

def test_copula_keeps_the_rank_correlation_of_sharegpt_token_lengths():
    d = np.loadtxt(need(TOKEN_STATS), delimiter=",", skiprows=1)
    inp, out = d[:, 0].astype(np.int64), d[:, 1].astype(np.int64)
    m = fit_lengths(inp, out)
    a, b = m.sample(len(inp), np.random.default_rng(0))
    assert stats.spearmanr(a, b).statistic == pytest.approx(m.spearman, abs=0.03)
    assert a.mean() == pytest.approx(inp.mean(), rel=0.03)
    assert b.mean() == pytest.approx(out.mean(), rel=0.03)
    assert stats.ks_2samp(a, inp).statistic < 0.03


def test_copula_keeps_a_strong_correlation():
    rng = np.random.default_rng(2)
    z = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=5000)
    inp, out = np.ceil(np.exp(5 + z[:, 0])), np.ceil(np.exp(3 + 0.5 * z[:, 1]))
    m = fit_lengths(inp, out)
    a, b = m.sample(5000, np.random.default_rng(3))
    assert stats.spearmanr(a, b).statistic == pytest.approx(m.spearman, abs=0.03)
    assert m.input.lognormal["sigma"] == pytest.approx(1.0, rel=0.05)


def test_zipf_fit_recovers_its_exponent():
    x = np.random.default_rng(4).zipf(2.2, size=5000)
    m = fit_lengths(x, x)
    assert m.input.zipf["a"] == pytest.approx(2.2, rel=0.05)
    assert m.input.zipf["ks"] < m.input.lognormal["ks"]


# ---- fitted models generate workloads -------------------------------------------------------

def test_fitted_model_generates_at_any_rate_and_length_scale():
    model = fit_trace(read_trace(need(AZURE_CONV), "azure"))
    wl = model_workload(model, 5000, request_rate=20.0, length_scale=0.5, seed=1)
    assert (len(wl) - 1) / (wl.t_intended[-1] - wl.t_intended[0]) == pytest.approx(20, rel=0.05)
    gaps = np.diff(wl.t_intended)
    assert gaps.std() / gaps.mean() == pytest.approx(model.iat.sample_cv, rel=0.1)
    assert wl.input_tokens.mean() == pytest.approx(0.5 * model.lengths.input.mean, rel=0.05)
    assert wl.dataset == "fitted" and wl.description["length_scale"] == 0.5


def test_model_json_round_trip_gives_the_same_workload(tmp_path):
    model = fit_trace(read_trace(need(BURSTGPT), "burstgpt"))
    path = model.save(tmp_path / "m.json")
    again = WorkloadModel.load(path)
    a = model_workload(model, 50, request_rate=3.0, seed=9)
    b = model_workload(again, 50, request_rate=3.0, seed=9)
    assert np.array_equal(a.t_intended, b.t_intended) and a.prompts == b.prompts
    assert np.array_equal(a.output_tokens, b.output_tokens)


def test_loading_a_non_model_file_names_it(tmp_path):
    p = tmp_path / "other.json"
    p.write_text('{"format": "x"}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"other\.json: not a loadgen-workload-model"):
        WorkloadModel.load(p)


def test_compare_reports_real_and_fitted_means_close():
    tr = read_trace(need(AZURE_CONV), "azure")
    c = compare(tr, fit_trace(tr))
    for k in ("interarrival_s", "input_tokens", "output_tokens"):
        assert c[k]["fitted"]["mean"] == pytest.approx(c[k]["real"]["mean"], rel=0.1)


# ---- CLI ------------------------------------------------------------------------------------

def test_cli_fit_then_plan_from_fit(tmp_path, capsys):
    from arrivals.plan import read_plan
    from loadgen.cli import main

    need(BURSTGPT)
    model = tmp_path / "m.json"
    assert main(["workload", "fit", str(BURSTGPT), "--trace-format", "burstgpt",
                 "--output", str(model)]) == 0
    out = capsys.readouterr().out
    assert "best by AIC" in out and "real mean" in out
    plan = tmp_path / "w.jsonl"
    assert main(["plan", "--from-fit", str(model), "--request-rate", "4", "--length-scale",
                 "2", "--num-prompts", "300", "--seed", "2", "-o", str(plan)]) == 0
    wl = read_plan(plan)
    assert len(wl) == 300 and wl.dataset == "fitted"
    assert wl.description["request_rate"] == 4.0 and wl.description["length_scale"] == 2.0
    assert math.isclose(wl.description["fitted_rate"], WorkloadModel.load(model).rate)


def test_cli_fit_of_a_bad_trace_names_the_file(tmp_path, capsys):
    from loadgen.cli import main

    p = tmp_path / "bad.csv"
    p.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "x,ChatGPT,1,2,3,Conversation log\n", encoding="utf-8")
    assert main(["workload", "fit", str(p), "--trace-format", "burstgpt"]) == 1
    assert "bad.csv:2" in capsys.readouterr().err
