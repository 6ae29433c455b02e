"""Latency distributions in HdrHistograms (mergeable, fixed relative precision).

Values are recorded in integer microseconds with 3 significant digits (0.1% relative error),
from 1 us to 1 hour. Percentiles are HdrHistogram's "value at percentile": the smallest
recorded value v such that at least p% of the values are <= v (within the precision), which
is what wrk2 and HdrHistogram users report. Means and standard deviations are computed from
the exact values with numpy. Encoded histograms go into summary.json so runs can be merged
without their raw lists.
"""

from __future__ import annotations

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIG_DIGITS = 3
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIG_DIGITS)


def histogram_of(seconds: np.ndarray) -> HdrHistogram:
    """An HdrHistogram of durations given in seconds (negative values are clipped to 0 us,
    values beyond an hour to an hour; NaN is skipped)."""
    h = new_histogram()
    v = np.asarray(seconds, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size:
        us = np.clip(np.rint(v * 1e6), LOWEST_US, HIGHEST_US).astype(np.int64)
        vals, counts = np.unique(us, return_counts=True)  # one record call per distinct value
        for x, c in zip(vals.tolist(), counts.tolist(), strict=True):
            h.record_value(x, c)
    return h


def percentile_word(p: float) -> str:
    """vllm bench serve's spelling: 99 -> "99", 99.9 -> "99.9"."""
    return str(int(p)) if float(p).is_integer() else str(p)


def describe_ms(seconds: np.ndarray, percentiles=PERCENTILES) -> dict:
    """count, mean, std, min, percentiles, max in milliseconds, plus the encoded histogram."""
    v = np.asarray(seconds, dtype=np.float64)
    v = v[np.isfinite(v)]
    out: dict = {"count": int(v.size)}
    if not v.size:
        return out
    h = histogram_of(v)
    out["mean"] = float(v.mean() * 1e3)
    out["std"] = float(v.std() * 1e3)
    out["min"] = float(v.min() * 1e3)
    for p in percentiles:
        out[f"p{percentile_word(p)}"] = h.get_value_at_percentile(p) / 1e3
    out["max"] = float(v.max() * 1e3)
    out["hdr"] = h.encode().decode()
    return out


def decode(encoded: str | bytes) -> HdrHistogram:
    """An HdrHistogram from its encoded form (the ``hdr`` strings of summary.json)."""
    return HdrHistogram.decode(encoded.encode() if isinstance(encoded, str) else encoded)


def merge_encoded(encoded: list[str | bytes]) -> HdrHistogram:
    """The sum of encoded histograms: exactly the histogram of all their values together
    (bucket counts add), without the values themselves."""
    h = new_histogram()
    for e in encoded:
        h.add(decode(e))
    return h


def combine_described(parts: list[dict], percentiles=PERCENTILES) -> dict:
    """``describe_ms`` of the union of several value sets, from their ``describe_ms`` outputs
    (each with its ``hdr``): percentiles from the merged histograms; count, min and max exact;
    mean and std exact from the parts (pooled: E[x^2] = std^2 + mean^2 per part)."""
    parts = [p for p in parts if p.get("count")]
    n = sum(p["count"] for p in parts)
    out: dict = {"count": int(n)}
    if not n:
        return out
    h = merge_encoded([p["hdr"] for p in parts])
    mean = sum(p["count"] * p["mean"] for p in parts) / n
    ex2 = sum(p["count"] * (p["std"] ** 2 + p["mean"] ** 2) for p in parts) / n
    out["mean"] = float(mean)
    out["std"] = float(max(ex2 - mean * mean, 0.0) ** 0.5)
    out["min"] = float(min(p["min"] for p in parts))
    for p in percentiles:
        out[f"p{percentile_word(p)}"] = h.get_value_at_percentile(p) / 1e3
    out["max"] = float(max(p["max"] for p in parts))
    out["hdr"] = h.encode().decode()
    return out
