"""Latency as a function of request size: median (least-absolute-deviation) regression.

Models, with latencies in ms and lengths in tokens:

    e2e  ~ a + b * input_tokens + c * output_tokens
    ttft ~ a + b * input_tokens

b is the per-token prefill cost and c the per-output-token decode cost as the user sees them.
On a continuous-batching engine alone (servers/sim/model.py): ttft = s + p * input and
e2e = p * input + s * output, with s = one decode step and p = prefill per token.

Fit: the conditional median, beta = argmin sum_i |y_i - x_i . beta| (quantile regression at
tau = 0.5, robust to the heavy right tail queueing gives latency). It is solved exactly as a
linear program (Koenker & Bassett 1978):

    min  1'u + 1'v   s.t.  X beta + u - v = y,   u, v >= 0,   beta free

with scipy.optimize.linprog (HiGHS), in its dual form (see ``lad``). Uncertainty: a nonparametric pairs bootstrap (resample
requests with replacement, refit, take the 2.5 and 97.5 % quantiles of each coefficient;
B = 200 by default, seeded). For large runs the bootstrap refits use a random subsample of
``max_boot_n`` rows and rescale the spread by sqrt(m/n) (m-out-of-n bootstrap), keeping the
cost bounded; the point estimate always uses every request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog


@dataclass(frozen=True)
class LinearFit:
    """Coefficients (ms, ms per token) of a fitted latency model, with 95 % bootstrap CIs."""

    names: tuple[str, ...]
    coef: tuple[float, ...]
    ci95: tuple[tuple[float, float], ...]
    n: int
    method: str = "median regression (LAD, linprog HiGHS), pairs bootstrap"
    extra: dict = field(default_factory=dict)

    def predict(self, *columns: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) for regressor columns given in the order of ``names[1:]``."""
        y = np.full(np.shape(columns[0]) if columns else (), self.coef[0], dtype=np.float64)
        for c, x in zip(self.coef[1:], columns, strict=True):
            y = y + c * np.asarray(x, dtype=np.float64)
        return y

    def as_dict(self) -> dict:
        d = {k: v for k, v in zip(self.names, self.coef, strict=True)}
        d["ci95"] = {k: list(v) for k, v in zip(self.names, self.ci95, strict=True)}
        d["method"] = self.method
        d["n"] = self.n
        return d


def lad(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-absolute-deviation coefficients of y ~ X (X includes the intercept column).

    Solved through the dual LP, which has k equality rows instead of n:

        max y'd   s.t.  X'd = 0,  -1 <= d <= 1

    and beta is the vector of multipliers of X'd = 0 (HiGHS reports the marginals of the
    minimisation of -y'd, hence the sign).
    """
    n, k = X.shape
    res = linprog(-y, A_eq=X.T, b_eq=np.zeros(k), bounds=(-1, 1), method="highs")
    if not res.success:
        raise ValueError(f"median regression failed: {res.message}")
    return -np.asarray(res.eqlin.marginals)


def fit_linear(y_ms: np.ndarray, regressors: dict[str, np.ndarray], *, n_boot: int = 200,
               seed: int = 0, max_boot_n: int = 2000, intercept: str = "a_ms") -> LinearFit:
    """Median regression of ``y_ms`` on the named regressors plus an intercept, with CIs.

    Rows with a non-finite value are dropped. Needs more rows than coefficients.
    """
    names = (intercept, *regressors)
    y = np.asarray(y_ms, dtype=np.float64)
    cols = [np.asarray(v, dtype=np.float64) for v in regressors.values()]
    keep = np.isfinite(y)
    for c in cols:
        keep &= np.isfinite(c)
    y = y[keep]
    X = np.column_stack([np.ones(y.size), *[c[keep] for c in cols]])
    n, k = X.shape
    if n <= k:
        nan = (math.nan, math.nan)
        return LinearFit(names, tuple([math.nan] * k), tuple([nan] * k), n)
    beta = lad(X, y)
    rng = np.random.default_rng(seed)
    m = min(n, max_boot_n)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, m)
        try:
            boots.append(lad(X[idx], y[idx]))
        except ValueError:
            continue
    if len(boots) >= 10:
        B = np.array(boots)
        scale = math.sqrt(m / n)  # m-out-of-n: the spread of a size-m estimate, shrunk to n
        lo = beta + scale * (np.quantile(B, 0.025, axis=0) - np.median(B, axis=0))
        hi = beta + scale * (np.quantile(B, 0.975, axis=0) - np.median(B, axis=0))
        ci = tuple((float(a), float(b)) for a, b in zip(lo, hi, strict=True))
    else:
        ci = tuple((math.nan, math.nan) for _ in range(k))
    return LinearFit(names, tuple(float(b) for b in beta), ci, n,
                     extra={"n_boot": len(boots), "boot_n": m})


def fit_e2e(e2e_ms: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray,
            **kw) -> LinearFit:
    """e2e ~ a + b * input + c * output (keys a_ms, b_ms_per_input_token,
    c_ms_per_output_token)."""
    return fit_linear(e2e_ms, {"b_ms_per_input_token": input_tokens,
                               "c_ms_per_output_token": output_tokens}, **kw)


def fit_ttft(ttft_ms: np.ndarray, input_tokens: np.ndarray, **kw) -> LinearFit:
    """ttft ~ a + b * input (keys a_ms, b_ms_per_input_token)."""
    return fit_linear(ttft_ms, {"b_ms_per_input_token": input_tokens}, **kw)


def relative_latency(fit: LinearFit, observed_ms: np.ndarray,
                     *columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-request (ratio, residual_ms) of the observed latency to the model's prediction for
    the request's size: ratio = observed / predicted, residual = observed - predicted.
    A ratio of 2 means "twice as slow as a typical request of this size" (NaN where the
    prediction is not positive)."""
    pred = fit.predict(*columns)
    obs = np.asarray(observed_ms, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(pred > 0, obs / pred, np.nan)
    return ratio, obs - pred
