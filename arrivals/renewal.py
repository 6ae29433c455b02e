"""Weibull renewal process: arrivals with a given mean rate and a burstiness (CV) knob.

Gaps X_1, X_2, ... are i.i.d. Weibull(shape k, scale s) and t_i = X_1 + ... + X_i.

    density    f(x) = (k/s) (x/s)^(k-1) exp(-(x/s)^k),  x >= 0
    mean       E[X] = s * Gamma(1 + 1/k)
    CV^2       Var[X] / E[X]^2 = Gamma(1 + 2/k) / Gamma(1 + 1/k)^2 - 1

The CV depends on k only, and falls strictly as k grows (k = 1 is the exponential, CV = 1,
i.e. the Poisson process; k < 1 burstier, CV > 1; k > 1 smoother, k ~ 3.6 gives CV ~ 0.3).
So for a requested CV we solve

    g(k) = lnGamma(1 + 2/k) - 2 lnGamma(1 + 1/k) - ln(1 + CV^2) = 0

for k with ``scipy.optimize.brentq`` on k in [K_MIN, K_MAX] (g is monotone there, written in
log-gamma so that small k does not overflow), then set the scale from the rate:
s = 1 / (rate * Gamma(1 + 1/k)), so that E[X] = 1/rate. The rate is constant over time; for a
rate that changes see :mod:`arrivals.thinning`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammaln

from arrivals.processes import _check, _times

K_MIN, K_MAX = 0.05, 500.0  # CV from about 4e5 down to about 0.0026


def _log1p_cv2(k: float) -> float:
    return float(gammaln(1.0 + 2.0 / k) - 2.0 * gammaln(1.0 + 1.0 / k))


CV_MAX, CV_MIN = math.sqrt(math.expm1(_log1p_cv2(K_MIN))), math.sqrt(math.expm1(_log1p_cv2(K_MAX)))


def weibull_cv(shape: float) -> float:
    """The CV of a Weibull(shape) gap: sqrt(Gamma(1+2/k)/Gamma(1+1/k)^2 - 1)."""
    return math.sqrt(math.expm1(_log1p_cv2(shape)))


def weibull_shape_from_cv(cv: float) -> float:
    """The Weibull shape k whose CV is ``cv`` (root of g(k) above, by Brent's method)."""
    if not (math.isfinite(cv) and CV_MIN <= cv <= CV_MAX):
        raise ValueError(f"Weibull CV must be a number in [{CV_MIN:.4g}, {CV_MAX:.4g}], "
                         f"got {cv!r}; "
                         "use constant arrivals for CV 0")
    target = math.log1p(cv * cv)
    if cv == 1.0:
        return 1.0
    return float(brentq(lambda k: _log1p_cv2(k) - target, K_MIN, K_MAX, xtol=1e-12, rtol=1e-12))


def weibull_schedule(
    rate: float, n: int, cv: float = 1.0, seed: int = 0, *, start_at_zero: bool = False
) -> np.ndarray:
    """``n`` arrival times of a Weibull renewal process: mean rate ``rate``, gap CV ``cv``."""
    _check(rate, n)
    k = weibull_shape_from_cv(cv)
    scale = 1.0 / (rate * math.exp(gammaln(1.0 + 1.0 / k)))
    rng = np.random.default_rng(seed)
    return _times(scale * rng.weibull(k, size=n), start_at_zero)
