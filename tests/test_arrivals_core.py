"""Schedules, lengths and synthetic workloads of the core (the full arrivals work is its own)."""

import math

import numpy as np
import pytest

from arrivals.lengths import uniform_lengths
from arrivals.processes import gamma_schedule, poisson_schedule, schedule
from arrivals.prompts import word_prompts
from arrivals.workload import Workload, synthetic_workload


def _rate_cv(t):
    gaps = np.diff(np.concatenate([[0.0], t]))
    return 1.0 / gaps.mean(), gaps.std() / gaps.mean()


@pytest.mark.parametrize("k", [0.25, 1.0, 4.0])
def test_gamma_schedule_has_requested_rate_and_cv(k):
    n = 200_000
    rate, cv = _rate_cv(gamma_schedule(50.0, n, burstiness=k, seed=3))
    # standard error of the mean gap is cv/sqrt(n) relative: 6 sigma bounds
    assert abs(rate / 50.0 - 1) < 6 * (1 / math.sqrt(k)) / math.sqrt(n)
    assert abs(cv - 1 / math.sqrt(k)) < 0.02 * (1 / math.sqrt(k)) + 0.01


def test_poisson_schedule_is_exponential_with_cv_one():
    rate, cv = _rate_cv(poisson_schedule(10.0, 100_000, seed=1))
    assert abs(rate - 10.0) < 0.2 and abs(cv - 1.0) < 0.02


def test_burstiness_one_is_the_poisson_schedule():
    a = schedule("gamma", 5.0, 100, burstiness=1.0, seed=7)
    b = schedule("poisson", 5.0, 100, seed=7)
    assert np.array_equal(a, b)


def test_constant_schedule_is_evenly_spaced():
    t = schedule("constant", 4.0, 5)
    assert np.allclose(t, [0.25, 0.5, 0.75, 1.0, 1.25])


def test_infinite_rate_is_a_burst_at_zero():
    assert np.all(schedule("poisson", math.inf, 10) == 0.0)


def test_same_seed_same_schedule_and_different_seed_differs():
    assert np.array_equal(poisson_schedule(3, 50, seed=1), poisson_schedule(3, 50, seed=1))
    assert not np.array_equal(poisson_schedule(3, 50, seed=1), poisson_schedule(3, 50, seed=2))


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan])
def test_bad_rate_is_rejected_with_its_value(rate):
    with pytest.raises(ValueError, match="request rate"):
        schedule("poisson", rate, 10)


def test_a_million_arrivals_are_one_vector():
    t = schedule("gamma", 1000.0, 1_000_000, burstiness=0.5, seed=0)
    assert t.shape == (1_000_000,) and np.all(np.diff(t) >= 0)


def test_uniform_lengths_stay_in_range_and_have_the_mean():
    rng = np.random.default_rng(0)
    x = uniform_lengths(100, 0.5, 50_000, rng)
    assert x.min() >= 50 and x.max() <= 150 and abs(x.mean() - 100) < 1


def test_word_prompts_have_exactly_the_requested_number_of_words():
    rng = np.random.default_rng(0)
    ps = word_prompts(np.array([1, 5, 300]), rng)
    assert [len(p.split()) for p in ps] == [1, 5, 300]


def test_synthetic_workload_prompts_do_not_depend_on_rate():
    a = synthetic_workload(num_requests=20, request_rate=1.0, seed=4)
    b = synthetic_workload(num_requests=20, request_rate=100.0, seed=4)
    assert a.prompts == b.prompts and not np.array_equal(a.t_intended, b.t_intended)


def test_workload_rejects_unsorted_times():
    with pytest.raises(ValueError, match="non-decreasing"):
        Workload(t_intended=np.array([1.0, 0.5]), prompts=["a", "b"],
                 input_tokens=np.array([1, 1]), output_tokens=np.array([1, 1]))
