"""Streaming smoothness: Metron's fluidity index and a stall ratio.

Fluidity index (Agrawal et al., "Etalon/Metron: Holistic Performance Evaluation Framework for
LLM Inference Systems", arXiv:2407.07000, Algorithm 1). Every token gets a deadline; a token
that arrives early banks the difference as slack for later tokens; a late token is charged
with every deadline that passed before it arrived, and the deadlines after it are re-anchored
at its arrival (slack reset to 0). With inter-token times T_0, T_1, ... and per-token deadline
D (D_p for the first interval when a prefill deadline is used, else the target TPOT D_d):

    if T_i <= D + slack:  slack += D - T_i;  total += 1
    else:                 misses = floor((T_i - slack - D) / D_d) + 1
                          missed += misses;  total += misses;  slack = 0
    fluidity = 1 - missed / total

Without a prefill deadline (the default here) the clock starts at the first token: token i
(i >= 1) is due at t_first_token + i * D_d, re-anchored after each miss, so the index is about
decoding smoothness only (TTFT has its own SLO). The index is over tokens, not chunks: a
chunk carrying k tokens delivers k tokens at once (analysis/tokens.py: token times
``repeat(chunk_times, k)``), so its later tokens have interval 0 and bank slack, exactly as
Metron treats tokens that a server emits together. With one token per chunk the two agree.

Stall ratio: the share of the streaming time (first to last chunk) a reader spends waiting
beyond the expected cadence D_d, summed over requests:

    stall_ratio = sum_r sum_i max(0, g_ri - k_ri * D_d) / sum_r (t_last_r - t_first_r)

with g_ri the gap before chunk i of request r and k_ri the tokens it brings: a chunk of k
tokens is due k cadences after the previous one (k = 1 per chunk when counts are unknown).
0 is a perfectly paced stream.
"""

from __future__ import annotations

import math

import numpy as np


def fluidity_counts(intervals: np.ndarray, target_tpot: float,
                    prefill_deadline: float | None = None) -> tuple[int, int]:
    """(missed, total) deadlines of one request by Metron's rule (module docstring).

    ``intervals``: inter-token times; when ``prefill_deadline`` is given the first entry is
    the time to the first token and is judged against it (D_p, slack included).
    """
    if target_tpot <= 0:
        raise ValueError(f"target_tpot must be > 0 seconds, got {target_tpot!r}")
    missed = total = 0
    slack = 0.0
    for i, t in enumerate(np.asarray(intervals, dtype=np.float64).tolist()):
        d = prefill_deadline if (i == 0 and prefill_deadline is not None) else target_tpot
        if t <= d + slack:
            slack += d - t
            total += 1
        else:
            misses = int(math.floor((t - slack - d) / target_tpot)) + 1
            missed += misses
            total += misses
            slack = 0.0
    return missed, total


def fluidity_index(intervals: np.ndarray, target_tpot: float,
                   prefill_deadline: float | None = None) -> float:
    """1 - missed/total for one request (NaN when it had no deadline, e.g. one token)."""
    missed, total = fluidity_counts(intervals, target_tpot, prefill_deadline)
    return 1.0 - missed / total if total else math.nan


def stall_time(chunk_times: np.ndarray, target_tpot: float,
               counts: np.ndarray | None = None) -> tuple[float, float]:
    """(stalled seconds, streaming seconds) of one request's chunk arrival times; ``counts``:
    tokens per chunk (default one each)."""
    c = np.asarray(chunk_times, dtype=np.float64)
    if c.size < 2:
        return 0.0, 0.0
    g = np.diff(c)
    due = target_tpot * (np.asarray(counts[1:], dtype=np.float64) if counts is not None else 1.0)
    return float(np.maximum(g - due, 0.0).sum()), float(c[-1] - c[0])


def smoothness(chunk_lists: list[np.ndarray], target_tpot: float,
               counts: list[np.ndarray] | None = None) -> dict:
    """Fluidity index (mean over requests with >= 2 chunks, and the share of those that
    met every deadline) and the pooled stall ratio, for a target TPOT in seconds.
    ``counts``: tokens of each chunk per request (analysis/tokens.py); default one each."""
    fl, stalled, streaming = [], 0.0, 0.0
    for r, c in enumerate(chunk_lists):
        c = np.asarray(c, dtype=np.float64)
        if c.size < 2:
            continue
        k = counts[r] if counts is not None else None
        tt = np.repeat(c, k) if k is not None else c
        fl.append(fluidity_index(np.diff(tt), target_tpot))
        s, w = stall_time(c, target_tpot, k)
        stalled += s
        streaming += w
    f = np.array(fl)
    return {
        "fluidity_index": float(f.mean()) if f.size else None,
        "fully_fluid_share": float((f >= 1.0).mean()) if f.size else None,
        "stall_ratio": stalled / streaming if streaming > 0 else None,
        "target_tpot_ms": target_tpot * 1e3,
        "n_requests": int(f.size),
    }
