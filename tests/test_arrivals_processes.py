"""Weibull renewal, thinning (time-varying rate) and superposition: realised rate and CV.

Sampling bounds. For n i.i.d. gaps with mean m and CV c, the realised mean gap has relative
standard error c/sqrt(n). The realised CV's standard error (delta method on the sample mean and
variance) is sqrt(c^2/n * ((mu4 - s^4)/(4 s^4) - mu3/(s^2 m) + c^2)), with mu3, mu4 the central
moments (scipy.stats gives them for the Weibull). Assertions use 6 standard errors, so a
correct implementation fails with probability < 1e-8 per check (and the seeds are fixed).
"""

import math
import time

import numpy as np
import pytest
from scipy import stats

from arrivals.renewal import weibull_cv, weibull_schedule, weibull_shape_from_cv
from arrivals.superposition import superpose
from arrivals.thinning import ramp, sine, steps, thinned_schedule


def _gaps(t):
    return np.diff(np.concatenate([[0.0], t]))


def _cv_se(dist, n):
    m, v, skew, exkurt = (float(x) for x in dist.stats(moments="mvsk"))
    s = math.sqrt(v)
    mu3, mu4 = skew * s**3, (exkurt + 3) * s**4
    c = s / m
    return math.sqrt(c**2 / n * ((mu4 - s**4) / (4 * s**4) - mu3 / (s**2 * m) + c**2))


@pytest.mark.parametrize("cv", [0.3, 1.0, 2.0])
def test_weibull_schedule_has_the_requested_rate_and_cv(cv):
    n, rate = 200_000, 40.0
    g = _gaps(weibull_schedule(rate, n, cv=cv, seed=5))
    k = weibull_shape_from_cv(cv)
    se_cv = _cv_se(stats.weibull_min(k, scale=1.0), n)
    assert abs(1 / g.mean() / rate - 1) < 6 * cv / math.sqrt(n)
    assert abs(g.std() / g.mean() - cv) < 6 * se_cv


@pytest.mark.parametrize("cv", [0.05, 0.5, 1.0, 3.0, 50.0])
def test_weibull_shape_solved_from_cv_gives_back_that_cv(cv):
    assert weibull_cv(weibull_shape_from_cv(cv)) == pytest.approx(cv, rel=1e-9)


def test_weibull_cv_one_is_the_exponential_shape_one():
    assert weibull_shape_from_cv(1.0) == 1.0


@pytest.mark.parametrize("cv", [0.0, -1.0, math.nan, 1e9])
def test_weibull_rejects_a_cv_out_of_range(cv):
    with pytest.raises(ValueError, match="Weibull CV"):
        weibull_shape_from_cv(cv)


def test_a_million_weibull_and_thinned_arrivals_take_well_under_a_second():
    t0 = time.perf_counter()
    a = weibull_schedule(1000.0, 1_000_000, cv=2.0, seed=0)
    b = thinned_schedule(sine(1000.0, 500.0, 60.0), 1000.0, seed=0)
    assert a.size == 1_000_000 and b.size > 900_000
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    "rate",
    [ramp(10.0, 200.0, 300.0), steps([50, 150, 20], [100, 100, 100]), sine(100.0, 80.0, 50.0)],
    ids=["ramp", "steps", "sine"],
)
def test_thinning_realises_the_rate_function(rate):
    T = 300.0
    t = thinned_schedule(rate, T, seed=11)
    lam_T = float(rate.cumulative(np.array(T)))
    # The count is Poisson(Lambda(T)): 6 sigma = 6 sqrt(Lambda).
    assert abs(t.size - lam_T) < 6 * math.sqrt(lam_T)
    # Time rescaling: Lambda(t_i) - Lambda(t_{i-1}) are i.i.d. Exp(1): mean 1 and CV 1, with
    # standard errors 1/sqrt(n) and 1/sqrt(n) (Exp: mu3 = 2, mu4 = 9 in the formula above).
    z = np.diff(np.concatenate([[0.0], rate.cumulative(t)]))
    n = z.size
    assert abs(z.mean() - 1) < 6 / math.sqrt(n)
    assert abs(z.std() / z.mean() - 1) < 6 * _cv_se(stats.expon(), n)


def test_thinning_follows_each_stage_of_a_staircase():
    t = thinned_schedule(steps([20, 80], [200, 200]), 400.0, seed=2)
    first, second = (t < 200).sum(), (t >= 200).sum()
    assert abs(first - 4000) < 6 * math.sqrt(4000) and abs(second - 16000) < 6 * math.sqrt(16000)


def test_thinning_takes_an_arbitrary_rate_function_with_a_bound():
    t = thinned_schedule(lambda x: 30.0 * (x > 50), 100.0, seed=1, rate_max=30.0)
    assert t.min() > 50 and abs(t.size - 1500) < 6 * math.sqrt(1500)


def test_thinning_refuses_a_rate_above_its_bound():
    with pytest.raises(ValueError, match="raise rate_max"):
        thinned_schedule(lambda x: np.full_like(x, 50.0), 10.0, rate_max=10.0)


def test_superposition_of_poisson_processes_is_poisson_with_the_summed_rate():
    a = weibull_schedule(3.0, 60_000, cv=1.0, seed=1)
    b = weibull_schedule(7.0, 140_000, cv=1.0, seed=2)
    t, src = superpose([a, b])
    g = np.diff(t)
    n = g.size
    assert abs(1 / g.mean() / 10.0 - 1) < 6 / math.sqrt(n)
    assert abs(g.std() / g.mean() - 1) < 6 * _cv_se(stats.expon(), n)
    assert abs((src == 0).mean() - 0.3) < 6 * math.sqrt(0.3 * 0.7 / n)


def test_superposition_keeps_the_summed_rate_of_bursty_components_and_dilutes_their_cv():
    comps = [weibull_schedule(5.0, 50_000, cv=3.0, seed=s) for s in range(4)]
    t, _ = superpose(comps)
    g = np.diff(t)
    # rate: counts add; the realised rate of each bursty component has relative SE 3/sqrt(n_j)
    assert abs(t.size / t[-1] / 20.0 - 1) < 6 * 3 / math.sqrt(t.size)
    assert 1.0 < g.std() / g.mean() < 3.0  # between Poisson and one component (Palm-Khintchine)
