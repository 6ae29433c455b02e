"""Request-length distributions (input and output tokens) as integer numpy arrays."""

from __future__ import annotations

import math

import numpy as np


def uniform_lengths(mean: int, range_ratio: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Integer lengths uniform on [mean*(1-r), mean*(1+r)], at least 1.

    This is ``vllm bench serve``'s random dataset (``--random-range-ratio r``): r = 0 gives the
    fixed length ``mean``; E[L] = mean (up to rounding and the clip at 1).
    """
    if not (isinstance(mean, int | np.integer) and mean >= 1):
        raise ValueError(f"length must be a positive integer number of tokens, got {mean!r}")
    if not (math.isfinite(range_ratio) and 0.0 <= range_ratio < 1.0):
        raise ValueError(f"range ratio must be in [0, 1), got {range_ratio!r}")
    lo = max(1, int(math.floor(mean * (1.0 - range_ratio))))
    hi = max(lo, int(math.ceil(mean * (1.0 + range_ratio))))
    return rng.integers(lo, hi + 1, size=n, dtype=np.int64)
