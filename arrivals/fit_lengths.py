"""Fitted request-length distributions: marginals plus their correlation (Gaussian copula).

Marginals. Each of input and output length keeps an *empirical* quantile table (the value at
probabilities 0, 1/Q, ..., 1; sampling interpolates it linearly, so the generated lengths
follow the data's shape including its tails up to the maximum), and reports two parametric
fits with their KS distance to the data: *lognormal* (MLE on log-lengths: mu = mean(log x),
sigma = sd(log x)) and *Zipf* (P(k) = k^-a / zeta(a), k >= 1; a by maximum likelihood),
which fits heavy-tailed counts "where it fits", i.e. when its KS distance is small.
Generation samples the empirical marginal unless asked for a parametric one.

Correlation. Input and output lengths are correlated (long questions get long answers, or
the reverse). We keep the dependence with a Gaussian copula: to generate, draw (z1, z2) ~
N(0, [[1, rho], [rho, 1]]) and map u = Phi(z) through each marginal's quantile function. The
copula acts on ranks, so it is the same on lengths or on log-lengths, and the marginals are
kept exactly. For a Gaussian copula Spearman's rank correlation is rho_S = (6/pi)
arcsin(rho/2), so we set rho = 2 sin(pi rho_S / 6) from the data's Spearman rho_S: the
generated pairs then have the data's rank correlation in expectation (checked by the tests on
the ShareGPT token_stats sample). (Resampling observed pairs, ``arrivals.transforms.
resample_lengths``, keeps the joint law exactly but cannot scale or smooth it.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize, special, stats

N_QUANTILES = 200


@dataclass(frozen=True)
class Marginal:
    """One length distribution: its empirical quantile table and parametric fits."""

    probs: list[float]
    values: list[float]
    mean: float
    cv: float
    lognormal: dict[str, float]  # mu, sigma, ks
    zipf: dict[str, float] | None  # a, ks (None if a is not > 1)

    def quantile(self, u: np.ndarray, family: str = "empirical") -> np.ndarray:
        """Lengths (float) at probabilities ``u`` from the empirical or a fitted family."""
        if family == "empirical":
            return np.interp(u, self.probs, self.values)
        if family == "lognormal":
            return np.exp(self.lognormal["mu"] + self.lognormal["sigma"] * stats.norm.ppf(u))
        if family == "zipf" and self.zipf is not None:
            return stats.zipf.ppf(u, self.zipf["a"]).astype(np.float64)
        raise ValueError(f"no {family!r} fit for this marginal; use empirical or lognormal")


def _zipf_fit(x: np.ndarray) -> dict[str, float] | None:
    """MLE of the Zipf exponent: minimise a*sum(log k) + n*log(zeta(a)) over a > 1."""
    x = x[x >= 1]
    if x.size < 2:
        return None
    slog = float(np.log(x).sum())

    def nll(a: float) -> float:
        return a * slog + x.size * math.log(special.zeta(a))

    res = optimize.minimize_scalar(nll, bounds=(1.0001, 20.0), method="bounded")
    a = float(res.x)
    ks = _ks_discrete(x, lambda k: stats.zipf.cdf(k, a))
    return {"a": a, "ks": ks}


def _ks_discrete(x: np.ndarray, cdf) -> float:
    """max |ECDF - CDF| over the observed values (the KS distance for integer data)."""
    v, c = np.unique(x, return_counts=True)
    ecdf = np.cumsum(c) / x.size
    ecdf_before = ecdf - c / x.size
    f = cdf(v)
    return float(max(np.max(np.abs(ecdf - f)), np.max(np.abs(ecdf_before - cdf(v - 1)))))


def fit_marginal(x: np.ndarray, n_quantiles: int = N_QUANTILES) -> Marginal:
    """The empirical quantile table, lognormal and Zipf fits of lengths ``x`` (>= 1)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2 or np.any(x < 1):
        raise ValueError("need at least 2 lengths, all >= 1 token, to fit a distribution")
    probs = np.linspace(0.0, 1.0, n_quantiles + 1)
    values = np.quantile(x, probs)
    lx = np.log(x)
    mu, sigma = float(lx.mean()), float(max(lx.std(), 1e-9))
    ks_ln = _ks_discrete(x, lambda k: stats.lognorm.cdf(k + 0.5, sigma, scale=math.exp(mu)))
    return Marginal(probs=probs.tolist(), values=values.tolist(), mean=float(x.mean()),
                    cv=float(x.std() / x.mean()),
                    lognormal={"mu": mu, "sigma": sigma, "ks": ks_ln}, zipf=_zipf_fit(x))


@dataclass(frozen=True)
class LengthModel:
    """Input and output length marginals joined by a Gaussian copula with correlation rho."""

    input: Marginal
    output: Marginal
    rho: float  # of the Gaussian copula: 2 sin(pi * spearman / 6)
    spearman: float  # of the data, for reference

    def sample(self, n: int, rng: np.random.Generator, *, scale: float = 1.0,
               family: str = "empirical") -> tuple[np.ndarray, np.ndarray]:
        """``n`` (input, output) pairs, each multiplied by ``scale``, rounded, >= 1."""
        cov = np.array([[1.0, self.rho], [self.rho, 1.0]])
        z = rng.multivariate_normal(np.zeros(2), cov, size=n, method="cholesky")
        u = stats.norm.cdf(z)
        out = []
        for m, col in ((self.input, u[:, 0]), (self.output, u[:, 1])):
            v = np.rint(m.quantile(col, family) * scale)
            out.append(np.maximum(v, 1).astype(np.int64))
        return out[0], out[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LengthModel:
        return cls(input=Marginal(**d["input"]), output=Marginal(**d["output"]),
                   rho=float(d["rho"]), spearman=float(d["spearman"]))


def fit_lengths(inp: np.ndarray, out: np.ndarray) -> LengthModel:
    """Fit the marginals of input and output lengths and their copula correlation."""
    inp, out = np.asarray(inp), np.asarray(out)
    if len(inp) != len(out):
        raise ValueError("input and output lengths must have the same number of rows")
    sp = float(stats.spearmanr(inp, out).statistic) if len(inp) > 2 else 0.0
    sp = sp if math.isfinite(sp) else 0.0  # nan when a column is constant
    rho = 2.0 * math.sin(math.pi * sp / 6.0)
    return LengthModel(input=fit_marginal(inp), output=fit_marginal(out), rho=rho, spearman=sp)
