"""Time-varying rate: a non-homogeneous Poisson process, drawn by thinning (Lewis-Shedler).

Given a rate function lambda(t) <= lambda_max on [0, T]:

1. draw a homogeneous Poisson process of rate lambda_max on [0, T]: N ~ Poisson(lambda_max T)
   points, placed as sorted Uniform(0, T) (the order statistics; equivalent to cumsum of
   Exponential gaps, and one vector draw);
2. keep the point at time t with probability lambda(t) / lambda_max (one uniform per point).

The kept points are a Poisson process of intensity lambda(t): the count in [a, b] is Poisson
with mean Lambda(b) - Lambda(a), where Lambda(t) = integral_0^t lambda(u) du, and (time
rescaling theorem) the gaps Lambda(t_i) - Lambda(t_{i-1}) are i.i.d. Exponential(1). The mean
rate over the run is Lambda(T) / T. Cost: lambda_max * T uniforms, so keep lambda_max tight.

Rate shapes are small frozen dataclasses: callable on a numpy array of times, with ``peak``
(a bound on lambda, used as lambda_max) and ``cumulative(t)`` = Lambda(t) in closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ramp:
    """lambda(t) = r0 + (r1 - r0) * min(t, d) / d: linear from r0 to r1 over d s, then r1."""

    r0: float
    r1: float
    duration: float

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return self.r0 + (self.r1 - self.r0) * np.clip(np.asarray(t) / self.duration, 0.0, 1.0)

    @property
    def peak(self) -> float:
        return max(self.r0, self.r1)

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        # Lambda(t) = r0 t + (r1-r0) t^2 / (2d) for t <= d; then Lambda(d) + r1 (t - d).
        t = np.asarray(t, dtype=np.float64)
        u = np.minimum(t, self.duration)
        return (self.r0 * u + (self.r1 - self.r0) * u * u / (2 * self.duration)
                + self.r1 * np.maximum(t - self.duration, 0.0))


@dataclass(frozen=True)
class Steps:
    """Stages: rate ``rates[j]`` for ``durations[j]`` seconds, one after another; the last
    rate holds after the last stage."""

    rates: tuple[float, ...]
    durations: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.rates) != len(self.durations) or not self.rates:
            raise ValueError("steps need one duration per rate (and at least one stage)")

    @property
    def _edges(self) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(self.durations)])

    def __call__(self, t: np.ndarray) -> np.ndarray:
        j = np.searchsorted(self._edges[1:], np.asarray(t), side="right")
        return np.asarray(self.rates)[np.minimum(j, len(self.rates) - 1)]

    @property
    def peak(self) -> float:
        return max(self.rates)

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        # Lambda is piecewise linear: the integral up to each edge, then rate_j * (t - edge_j).
        t = np.asarray(t, dtype=np.float64)
        e = self._edges
        r = np.asarray(self.rates, dtype=np.float64)
        at_edges = np.concatenate([[0.0], np.cumsum(r * np.diff(e))])
        j = np.minimum(np.searchsorted(e[1:], t, side="right"), len(r) - 1)
        return at_edges[j] + r[j] * (t - e[j])


@dataclass(frozen=True)
class Sine:
    """lambda(t) = mean + amplitude * sin(2 pi t / period + phase), amplitude <= mean.

    Lambda(t) = mean t + amplitude * period / (2 pi) * (cos(phase) - cos(2 pi t/period + phase)).
    """

    mean: float
    amplitude: float
    period: float
    phase: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.amplitude <= self.mean:
            raise ValueError(f"sine amplitude must be in [0, mean={self.mean}] so the rate stays "
                             f">= 0, got {self.amplitude}")

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return self.mean + self.amplitude * np.sin(2 * math.pi * np.asarray(t) / self.period
                                                   + self.phase)

    @property
    def peak(self) -> float:
        return self.mean + self.amplitude

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        w = 2 * math.pi / self.period
        return self.mean * t + self.amplitude / w * (math.cos(self.phase)
                                                     - np.cos(w * t + self.phase))


def ramp(r0: float, r1: float, duration: float) -> Ramp:
    """A linear ramp of the rate from ``r0`` to ``r1`` req/s over ``duration`` seconds."""
    return Ramp(float(r0), float(r1), float(duration))


def steps(rates: Sequence[float], durations: Sequence[float]) -> Steps:
    """Stages of constant rate (e.g. a staircase 10, 20, 40 req/s for 60 s each)."""
    return Steps(tuple(map(float, rates)), tuple(map(float, durations)))


def sine(mean: float, amplitude: float, period: float, phase: float = 0.0) -> Sine:
    """A sinusoidal rate (a diurnal pattern, compressed)."""
    return Sine(float(mean), float(amplitude), float(period), float(phase))


def thinned_schedule(
    rate: Callable[[np.ndarray], np.ndarray],
    duration: float,
    seed: int = 0,
    *,
    rate_max: float | None = None,
) -> np.ndarray:
    """Arrival times on [0, ``duration``) of a Poisson process with intensity ``rate(t)``.

    ``rate`` is any vectorised function of time (numpy array in, array out) that is >= 0 and
    <= ``rate_max`` (default: its ``peak`` attribute); a value above the bound is an error,
    because thinning would silently cap it.
    """
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a finite number of seconds > 0, got {duration!r}")
    lam_max = rate_max if rate_max is not None else getattr(rate, "peak", None)
    if lam_max is None or not (math.isfinite(lam_max) and lam_max > 0):
        raise ValueError("thinning needs rate_max, a finite bound > 0 on the rate function "
                         f"(got {lam_max!r}); pass rate_max= for a plain function")
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(lam_max * duration))
    cand = np.sort(rng.uniform(0.0, duration, size=n))
    lam = np.asarray(rate(cand), dtype=np.float64)
    if lam.shape != cand.shape:
        raise ValueError(f"the rate function must return one rate per time; got shape {lam.shape}")
    if n and (lam.min() < 0 or lam.max() > lam_max * (1 + 1e-9)):
        raise ValueError(f"rate function left [0, rate_max={lam_max}] (min {lam.min():.6g}, max "
                         f"{lam.max():.6g}); raise rate_max to the true peak of the rate")
    return cand[rng.uniform(0.0, 1.0, size=n) * lam_max < lam]
