"""Replay fidelity: intended vs realised inter-arrival times."""

from __future__ import annotations

import numpy as np
import pytest

from arrivals.fidelity import replay_fidelity
from arrivals.processes import constant_schedule, poisson_schedule


def test_a_faithful_replay_has_ks_distance_near_zero_and_equal_cvs():
    t = poisson_schedule(10.0, 2000, seed=1)
    sent = t + np.random.default_rng(2).uniform(0, 1e-4, t.size)  # 0.1 ms jitter
    r = replay_fidelity(t, sent)
    assert r["ks_stat"] < 0.02 and r["same_distribution"]
    assert r["cv_sent"] == pytest.approx(r["cv_intended"], rel=0.02)
    assert r["send_lag_s"]["max"] <= 1e-4


def test_a_replay_that_smoothed_the_bursts_is_flagged():
    t = poisson_schedule(10.0, 2000, seed=1)
    sent = constant_schedule(10.0, 2000)  # same rate, no bursts
    r = replay_fidelity(t, sent)
    assert not r["same_distribution"] and r["ks_stat"] > 0.3
    assert r["cv_intended"] == pytest.approx(1.0, abs=0.1) and r["cv_sent"] < 1e-6
    assert r["rate_sent"] == pytest.approx(r["rate_intended"], rel=0.1)


def test_unsent_requests_are_counted_and_left_out():
    t = np.arange(10.0)
    sent = t.copy()
    sent[[3, 7]] = np.nan
    r = replay_fidelity(t, sent)
    assert r["unsent"] == 2 and r["n_sent"] == 8


def test_too_few_times_is_an_error():
    with pytest.raises(ValueError, match="at least 3"):
        replay_fidelity(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
