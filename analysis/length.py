"""Length-conditioned latency: percentiles per (input length, output length) bucket.

Buckets are powers of two chosen from the data: for lengths in [min, max] the edges are
2^floor(log2 min), ..., 2^(floor(log2 max) + 1), and a bucket is the half-open range
[lo, hi). A 4k-token prompt and a 40-token one thus never share a bucket, and the number of
buckets grows with the logarithm of the spread, not with the sample size. Every cell lists
its count n, so a p99 from 7 requests reads as what it is. Only non-empty cells are listed.

Percentiles here are the order statistic X_(ceil(n p)) (as in ``analysis.ci``); TTFT and E2E
are per request, ITL pools the inter-chunk gaps of the cell's requests.
"""

from __future__ import annotations

import math

import numpy as np


def log2_edges(lengths: np.ndarray) -> list[int]:
    """Power-of-two bucket edges covering ``lengths`` (values < 1 are treated as 1)."""
    v = np.asarray(lengths, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return [1, 2]
    lo = int(math.floor(math.log2(max(v.min(), 1.0))))
    hi = int(math.floor(math.log2(max(v.max(), 1.0)))) + 1
    return [2**k for k in range(lo, hi + 1)]


def _q(v: np.ndarray, p: float) -> float | None:
    v = np.sort(v[np.isfinite(v)])
    if v.size == 0:
        return None
    return float(v[max(math.ceil(v.size * p), 1) - 1])


def _gaps_ms(per_request: list[np.ndarray] | None, m: np.ndarray) -> np.ndarray:
    """The gaps (s) of the requests selected by mask ``m``, joined, in ms."""
    if per_request is None:
        return np.empty(0)
    parts = [per_request[k] for k in np.nonzero(m)[0]]
    return np.concatenate(parts) * 1e3 if parts else np.empty(0)


def length_buckets(input_tokens: np.ndarray, output_tokens: np.ndarray, ttft_s: np.ndarray,
                   e2e_s: np.ndarray, itl_per_request: list[np.ndarray] | None = None,
                   itl_token_per_request: list[np.ndarray] | None = None) -> dict:
    """Per-bucket p50/p99 of TTFT, E2E and ITL in ms (arrays are aligned per request).

    ``itl_per_request``: each request's gaps between chunks (``itl_*``);
    ``itl_token_per_request``: its per-token gaps (``itl_token_*``: a chunk of k tokens after a
    gap g counts k gaps of g/k, analysis/tokens.py), which differ where chunks carry several
    tokens. Returns ``{"input_edges", "output_edges", "cells": [{input_lo, input_hi,
    output_lo, output_hi, n, ttft_p50_ms, ttft_p99_ms, e2e_p50_ms, e2e_p99_ms, itl_p50_ms,
    itl_p99_ms, itl_token_p50_ms, itl_token_p99_ms}]}``.
    """
    inp = np.asarray(input_tokens, dtype=np.float64)
    out = np.asarray(output_tokens, dtype=np.float64)
    ttft = np.asarray(ttft_s, dtype=np.float64) * 1e3
    e2e = np.asarray(e2e_s, dtype=np.float64) * 1e3
    ie, oe = log2_edges(inp), log2_edges(out)
    bi = np.clip(np.searchsorted(ie, np.maximum(inp, 1), side="right") - 1, 0, len(ie) - 2)
    bo = np.clip(np.searchsorted(oe, np.maximum(out, 1), side="right") - 1, 0, len(oe) - 2)
    cells = []
    for i in range(len(ie) - 1):
        for j in range(len(oe) - 1):
            m = (bi == i) & (bo == j)
            n = int(m.sum())
            if n == 0:
                continue
            itl = _gaps_ms(itl_per_request, m)
            itl_tok = _gaps_ms(itl_token_per_request, m)
            cells.append({
                "input_lo": ie[i], "input_hi": ie[i + 1],
                "output_lo": oe[j], "output_hi": oe[j + 1], "n": n,
                "ttft_p50_ms": _q(ttft[m], 0.5), "ttft_p99_ms": _q(ttft[m], 0.99),
                "e2e_p50_ms": _q(e2e[m], 0.5), "e2e_p99_ms": _q(e2e[m], 0.99),
                "itl_p50_ms": _q(itl, 0.5), "itl_p99_ms": _q(itl, 0.99),
                "itl_token_p50_ms": _q(itl_tok, 0.5), "itl_token_p99_ms": _q(itl_tok, 0.99),
            })
    return {"input_edges": ie, "output_edges": oe, "cells": cells}
