"""The generator's check on itself: did it send what it was asked to, when it was asked to?

A run is INVALID when the generator's own send lag (t_sent - t_intended, excluding time spent
waiting for a --max-concurrency slot) has a p99 above the threshold: the load the server saw
was then not the load that was asked for. The realised inter-arrival times are compared with
the intended ones (two-sample Kolmogorov-Smirnov); that and the achieved rate are reported,
not used for the verdict.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from analysis.metrics import Derived


def rate_windows(t_intended: np.ndarray, t_sent: np.ndarray, window_s: float) -> dict:
    """Intended vs achieved send rate in consecutive windows of ``window_s`` seconds."""
    t_sent = t_sent[np.isfinite(t_sent)]
    if not len(t_intended):
        return {"window_s": window_s, "intended": [], "achieved": []}
    end = max(float(np.max(t_intended)), float(np.max(t_sent)) if t_sent.size else 0.0)
    edges = np.arange(0.0, end + window_s, window_s)
    if len(edges) < 2:
        edges = np.array([0.0, window_s])
    ih, _ = np.histogram(t_intended, edges)
    sh, _ = np.histogram(t_sent, edges)
    return {
        "window_s": window_s,
        "intended": (ih / window_s).round(3).tolist(),
        "achieved": (sh / window_s).round(3).tolist(),
    }


def interarrival_ks(t_intended: np.ndarray, t_sent: np.ndarray) -> dict:
    """Two-sample KS test of realised vs intended inter-arrival gaps."""
    s = np.sort(t_sent[np.isfinite(t_sent)])
    gi, gs = np.diff(np.sort(t_intended)), np.diff(s)
    if gi.size < 8 or gs.size < 8 or np.all(gi == gi[0]) and np.all(gs == gs[0]):
        return {"n": int(gs.size), "statistic": None, "pvalue": None, "note": "too few or constant gaps"}
    r = stats.ks_2samp(gs, gi)
    cv = lambda g: float(g.std() / g.mean()) if g.mean() > 0 else math.nan  # noqa: E731
    return {
        "n": int(gs.size),
        "statistic": float(r.statistic),
        "pvalue": float(r.pvalue),
        "cv_intended": cv(gi),
        "cv_realised": cv(gs),
    }


INTERRUPTIONS = {
    "killed": "the generator's death (SIGKILL, out of memory or a crash; records recovered up "
              "to its last flush)",
    "write_error": "a failure to write its records (disk full or unwritable; see the manifest's "
                   "failure)",
}
"""What a non-signal ``interrupted_by`` means (signals are named as they are: SIGINT ...)."""


def verdict(
    d: Derived,
    *,
    max_send_lag_ms: float,
    burst: bool,
    interrupted: str | None,
    n_intended: int,
    n_recorded: int,
    lag_p99_by_worker: dict[str, float | None] | None = None,
) -> dict:
    """VALID, INVALID or PARTIAL, with every reason spelled out.

    With several generator workers, each worker's send-lag p99 must be within the threshold
    too (``lag_p99_by_worker``): one late worker among many can hide below the run's p99.
    """
    reasons: list[str] = []
    notes: list[str] = []
    lag_ms = d.send_lag * 1e3
    p99 = float(np.percentile(lag_ms, 99)) if lag_ms.size else math.nan
    if burst:
        notes.append("burst mode (request rate inf): every request is intended at t=0, so the "
                     "send-lag check does not apply; send lag shows how fast the client fired")
    elif lag_ms.size and p99 > max_send_lag_ms:
        reasons.append(
            f"generator fell behind its schedule: send lag p99 {p99:.2f} ms > {max_send_lag_ms:g} ms "
            "(the server did not see the requested load; use more --workers or a lower rate)"
        )
    if not burst and lag_p99_by_worker and len(lag_p99_by_worker) > 1:
        late = {w: v for w, v in lag_p99_by_worker.items() if v is not None and v > max_send_lag_ms}
        if late:
            reasons.append(
                "generator worker(s) fell behind: " + ", ".join(
                    f"worker {w} send lag p99 {v:.2f} ms" for w, v in sorted(late.items()))
                + f" > {max_send_lag_ms:g} ms")
    if interrupted:
        why = INTERRUPTIONS.get(interrupted, interrupted)
        reasons.append(f"run interrupted by {why}: {n_recorded} of {n_intended} requests recorded")
    elif n_recorded < n_intended:
        reasons.append(f"only {n_recorded} of {n_intended} intended requests were recorded")
    if interrupted:
        v = "PARTIAL"
    else:
        v = "INVALID" if reasons else "VALID"
    return {
        "verdict": v,
        "valid": v == "VALID",
        "reasons": reasons,
        "notes": notes,
        "max_send_lag_ms": max_send_lag_ms,
        "send_lag_p99_ms": p99,
        "send_lag_p99_ms_by_worker": lag_p99_by_worker,
    }
