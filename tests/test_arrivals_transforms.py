"""Declared trace transforms: each does what it says and is recorded in the description."""

import math

import numpy as np
import pytest

from arrivals import transforms as tf
from arrivals.processes import gamma_schedule
from arrivals.trace_workload import trace_workload
from arrivals.traces import read_azure, read_burstgpt
from arrivals.traces.trace import build_trace
from tests.test_arrivals_traces import AZURE_CONV, BURSTGPT, need


def _cv(t):
    g = np.diff(t)
    return g.std() / g.mean()


def _synthetic(n=100_000, k=0.25, seed=0):
    t = gamma_schedule(10.0, n, burstiness=k, seed=seed)  # CV = 1/sqrt(k) = 2
    ones = np.ones(n, dtype=int)
    return build_trace(t, ones * 7, ones * 3, list(range(2, n + 2)), source="syn", format="syn")


def test_speedup_two_halves_the_span_and_every_gap():
    tr = read_burstgpt(need(BURSTGPT))
    fast = tf.speedup(tr, 2.0)
    assert fast.span == tr.span / 2
    assert np.allclose(np.diff(fast.t), np.diff(tr.t) / 2)
    assert fast.transforms == ({"op": "speedup", "factor": 2.0},)


def test_window_keeps_its_requests_retimed_from_the_window_start():
    tr = read_azure(need(AZURE_CONV))
    w = tf.window(tr, 100.0, 400.0)
    inside = (tr.t >= 100) & (tr.t < 400)
    assert len(w) == int(inside.sum())
    assert np.allclose(w.t, tr.t[inside] - 100.0) and w.t.min() >= 0 and w.t.max() < 300
    assert w.transforms[-1]["op"] == "window" and w.transforms[-1]["kept"] == len(w)


def test_an_empty_window_is_an_error_that_gives_the_span():
    tr = read_burstgpt(need(BURSTGPT))
    with pytest.raises(ValueError, match="holds no request.*spans 0:37269"):
        tf.window(tr, 1e6, 2e6)


def test_thinning_to_half_keeps_about_half_the_requests():
    tr = read_azure(need(AZURE_CONV))
    th = tf.thin(tr, 0.5, seed=3)
    n = len(tr)
    assert abs(len(th) - n / 2) < 6 * math.sqrt(n * 0.25)  # Binomial(n, 1/2), 6 sigma


def test_thinning_moves_the_cv_as_renewal_theory_says():
    # For a renewal stream with CV c thinned with p: CV'^2 = p c^2 + 1 - p (see transforms.py).
    tr = _synthetic()
    th = tf.thin(tr, 0.5, seed=1)
    # 50k gaps of a gamma-sum stream: the sample CV's standard error is about 0.01; bound 0.06.
    assert abs(_cv(th.t) - math.sqrt(0.5 * 4 + 0.5)) < 0.06


def test_thinning_the_azure_trace_keeps_its_cv_within_sampling_error():
    # The Azure conv sample is near-Poisson (CV ~1.06); thinned to half its CV must match the
    # renewal formula. Its standard error across thinning seeds is ~0.022 (200 seeds, measured
    # once); the bound 0.15 is about 6.8 of them.
    tr = read_azure(need(AZURE_CONV))
    c = _cv(tr.t)
    assert abs(_cv(tf.thin(tr, 0.5, seed=7).t) - math.sqrt(0.5 * c * c + 0.5)) < 0.15


def test_superposition_multiplies_the_rate_and_keeps_span_and_lengths():
    tr = read_burstgpt(need(BURSTGPT))
    sp = tf.superpose_copies(tr, 3, seed=2)
    assert len(sp) == 3 * len(tr)
    assert sp.span <= tr.span and sp.mean_rate == pytest.approx(3 * tr.mean_rate, rel=0.01)
    assert sorted(sp.input_tokens.tolist()) == sorted(tr.input_tokens.tolist() * 3)


def test_superposition_of_one_copy_is_the_trace():
    tr = read_burstgpt(need(BURSTGPT))
    assert np.array_equal(tf.superpose_copies(tr, 1).t, tr.t)


def test_superposed_copies_keep_the_burst_structure_of_a_bursty_stream():
    # Overlaying 2 shifted copies of a CV-2 stream: far burstier than Poisson (CV 1) would be.
    sp = tf.superpose_copies(_synthetic(), 2, seed=0)
    assert _cv(sp.t) > 1.5


@pytest.mark.parametrize("target_factor", [0.3, 2.5])
def test_to_rate_reaches_the_target_mean_rate(target_factor):
    tr = read_azure(need(AZURE_CONV))
    target = target_factor * tr.mean_rate
    out = tf.to_rate(tr, target, seed=4)
    expected = target * tr.span
    assert abs(len(out) - expected) < 6 * math.sqrt(expected)
    assert out.transforms[-1]["op"] == "to_rate" and out.transforms[-1]["rate"] == target


def test_filter_by_model_log_type_and_success():
    tr = read_burstgpt(need(BURSTGPT))
    gpt4 = tf.filter_rows(tr, model="GPT-4")
    assert set(gpt4.extra["model"]) == {"GPT-4"} and 0 < len(gpt4) < len(tr)
    ok = tf.filter_rows(tr, success=True)
    assert len(ok) == 383 and ok.transforms[-1]["dropped"] == 17
    conv = tf.filter_rows(tr, log_type="Conversation log")
    assert set(conv.extra["log_type"]) == {"Conversation log"}


def test_filter_on_a_column_the_format_lacks_says_so():
    with pytest.raises(ValueError, match="no model column"):
        tf.filter_rows(read_azure(need(AZURE_CONV)), model="GPT-4")


def test_resampled_lengths_come_in_pairs_from_the_joint_distribution():
    tr = read_azure(need(AZURE_CONV))
    rs = tf.resample_lengths(tr, seed=5)
    pairs = set(zip(tr.input_tokens.tolist(), tr.output_tokens.tolist(), strict=True))
    assert np.array_equal(rs.t, tr.t)
    assert all(p in pairs for p in zip(rs.input_tokens.tolist(), rs.output_tokens.tolist(),
                                       strict=True))
    assert not np.array_equal(rs.input_tokens, tr.input_tokens)


def test_trace_workload_drops_failed_rows_and_records_how_many():
    tr = read_burstgpt(need(BURSTGPT))
    wl = trace_workload(tf.speedup(tr, 100.0), seed=1)
    assert len(wl) == 383 and wl.description["failed_dropped"] == 17
    assert wl.t_intended[0] == 0.0 and (wl.output_tokens >= 1).all()
    assert [len(p.split()) for p in wl.prompts] == wl.input_tokens.tolist()
    assert wl.description["trace"]["transforms"] == [{"op": "speedup", "factor": 100.0}]
    assert wl.item_ids[0] == "BurstGPT_1_rows1-400.csv:2"


def test_trace_workload_can_keep_failed_rows_clipped_to_one_token():
    wl = trace_workload(read_burstgpt(need(BURSTGPT)), drop_failed=False, max_requests=400)
    assert len(wl) == 400 and wl.description["clipped_to_one_token"] == 17
    assert wl.input_tokens.min() == 1 and wl.output_tokens.min() == 1
