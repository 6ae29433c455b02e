"""Think-time distributions: how long a user pauses between a response and their next turn.

Used when a session's think times are not in the data (ShareGPT has none; a trace may have
none). A spec string names the distribution and its mean (seconds), so that ``--think-time``
reads like the other flags:

    S or const:S        constant S seconds
    exp:M               exponential, mean M: density (1/M) e^{-x/M}, CV = 1
    gamma:M:CV          gamma with mean M and coefficient of variation CV: shape k = 1/CV^2,
                        scale theta = M / k (mean k theta = M, variance k theta^2 = (CV M)^2)
    lognormal:M:CV      lognormal with mean M and CV: sigma^2 = ln(1 + CV^2),
                        mu = ln M - sigma^2 / 2 (mean e^{mu + sigma^2/2} = M)
    uniform:A:B         uniform on [A, B]

Draws are seeded (numpy Generator) and made before the run, so a plan holds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("const", "exp", "gamma", "lognormal", "uniform")


@dataclass(frozen=True)
class ThinkTime:
    """A think-time distribution (see the module docstring for the parameters)."""

    kind: str
    params: tuple[float, ...]

    @property
    def mean(self) -> float:
        if self.kind == "uniform":
            return (self.params[0] + self.params[1]) / 2
        return self.params[0]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` think times in seconds (float64, >= 0)."""
        p = self.params
        if self.kind == "const":
            return np.full(n, p[0], dtype=np.float64)
        if self.kind == "exp":
            return rng.exponential(p[0], n) if p[0] > 0 else np.zeros(n)
        if self.kind == "gamma":
            k = 1.0 / p[1] ** 2
            return rng.gamma(k, p[0] / k, n)
        if self.kind == "lognormal":
            s2 = math.log1p(p[1] ** 2)
            return rng.lognormal(math.log(p[0]) - s2 / 2, math.sqrt(s2), n)
        return rng.uniform(p[0], p[1], n)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": list(self.params), "mean_s": self.mean,
                "spec": self.spec}

    @property
    def spec(self) -> str:
        return ":".join([self.kind, *(f"{x:g}" for x in self.params)])


def parse_think_time(spec: str) -> ThinkTime:
    """``"exp:5"`` -> ThinkTime; the error names the spec and the accepted forms."""
    forms = "S, const:S, exp:MEAN, gamma:MEAN:CV, lognormal:MEAN:CV or uniform:A:B (seconds)"
    parts = [s.strip() for s in str(spec).split(":")]
    kind, args = (parts[0].lower(), parts[1:]) if not _is_number(parts[0]) else ("const", parts)
    want = {"const": 1, "exp": 1, "gamma": 2, "lognormal": 2, "uniform": 2}
    if kind not in want or len(args) != want[kind] or not all(_is_number(a) for a in args):
        raise ValueError(f"think time {spec!r}: expected {forms}")
    p = tuple(float(a) for a in args)
    if not all(math.isfinite(x) and x >= 0 for x in p):
        raise ValueError(f"think time {spec!r}: parameters must be finite and >= 0")
    if kind in ("gamma", "lognormal") and (p[0] <= 0 or p[1] <= 0):
        raise ValueError(f"think time {spec!r}: {kind} needs MEAN > 0 and CV > 0")
    if kind == "uniform" and p[0] > p[1]:
        raise ValueError(f"think time {spec!r}: uniform needs A <= B")
    return ThinkTime(kind, p)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
