"""Arrival processes: the intended send times of a run, computed up front as one numpy array.

Every process here is a *renewal process*: inter-arrival gaps X_1, X_2, ... are i.i.d. and
request i is intended at t_i = X_1 + ... + X_i (so the first request is not at 0 but after
one gap, as in ``vllm bench serve``; use ``start_at_zero=True`` to shift it to 0).

All of them are seeded (``numpy.random.default_rng(seed)``) and vectorised: a million arrivals
are one ``cumsum`` over one array.
"""

from __future__ import annotations

import math

import numpy as np

PROCESSES = ("constant", "poisson", "gamma")


def _check(rate: float, n: int) -> None:
    if not (isinstance(n, int | np.integer) and n >= 1):
        raise ValueError(f"number of requests must be a positive integer, got {n!r}")
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"request rate must be a finite number > 0 (requests/s), got {rate!r}")


def _times(gaps: np.ndarray, start_at_zero: bool) -> np.ndarray:
    t = np.cumsum(gaps, dtype=np.float64)
    if start_at_zero:
        t -= t[0]
    return t


def constant_schedule(rate: float, n: int, *, start_at_zero: bool = False) -> np.ndarray:
    """Deterministic arrivals every 1/rate seconds (CV = 0)."""
    _check(rate, n)
    return _times(np.full(n, 1.0 / rate), start_at_zero)


def poisson_schedule(
    rate: float, n: int, seed: int = 0, *, start_at_zero: bool = False
) -> np.ndarray:
    """Poisson process: gaps X ~ Exponential(rate), density rate*exp(-rate*x), mean 1/rate, CV 1."""
    _check(rate, n)
    rng = np.random.default_rng(seed)
    return _times(rng.exponential(1.0 / rate, size=n), start_at_zero)


def gamma_schedule(
    rate: float, n: int, burstiness: float = 1.0, seed: int = 0, *, start_at_zero: bool = False
) -> np.ndarray:
    """Gamma renewal process with shape k = ``burstiness`` and the given mean rate.

    Gaps X ~ Gamma(shape=k, scale=theta) with theta = 1/(k*rate), so that
    E[X] = k*theta = 1/rate (the requested rate) and CV = sd/mean = sqrt(k)*theta/(k*theta)
    = 1/sqrt(k). k = 1 is exactly the Poisson process; k < 1 is burstier (CV > 1),
    k > 1 smoother (k -> inf tends to constant spacing). This is ``vllm bench serve``'s
    ``--burstiness`` knob.
    """
    _check(rate, n)
    if not (math.isfinite(burstiness) and burstiness > 0):
        raise ValueError(f"burstiness (gamma shape k) must be a finite number > 0, got {burstiness!r}")
    rng = np.random.default_rng(seed)
    theta = (1.0 / burstiness) / rate  # not 1/(k*rate): k*rate can underflow to 0
    if not (math.isfinite(theta) and theta > 0):
        raise ValueError(f"burstiness {burstiness!r} with rate {rate!r} gives a gap scale of "
                         f"{theta!r} s, which is not usable; choose values nearer 1")
    return _times(rng.gamma(burstiness, theta, size=n), start_at_zero)


def schedule(
    process: str,
    rate: float,
    n: int,
    *,
    burstiness: float = 1.0,
    seed: int = 0,
    start_at_zero: bool = False,
) -> np.ndarray:
    """Intended send times (seconds from t0, float64, non-decreasing) for ``n`` requests.

    ``rate = inf`` sends every request at t=0 (a burst; ``vllm bench serve``'s default).
    """
    if process not in PROCESSES:
        raise ValueError(f"unknown arrival process {process!r}; expected one of {', '.join(PROCESSES)}")
    if rate == math.inf:
        _check(1.0, n)
        return np.zeros(n, dtype=np.float64)
    if process == "constant":
        return constant_schedule(rate, n, start_at_zero=start_at_zero)
    if process == "poisson" or burstiness == 1.0:
        # Gamma with k=1 draws differently from Exponential; keep Poisson on one code path so
        # that --burstiness 1 gives exactly the Poisson schedule for the same seed.
        return poisson_schedule(rate, n, seed, start_at_zero=start_at_zero)
    return gamma_schedule(rate, n, burstiness, seed, start_at_zero=start_at_zero)
