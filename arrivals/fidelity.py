"""Replay fidelity: did the run send requests with the trace's inter-arrival pattern?

Given the intended send times of a replay (the trace's, after transforms) and the realised
send times of the run (``t_sent`` of the records), compare their inter-arrival gaps:

- two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``): D = sup |F_intended -
  F_sent| over the gap distributions, with its p-value; a small D (and p >= alpha) means the
  realised gaps are indistinguishable from the intended ones at this sample size;
- the CV of each (burstiness: the replay should keep it), the mean rates, and the send lag
  (t_sent - t_intended, when both are given per request) p50/p99/max.

Pure computation (numpy in, dict out), so the summary can call it on any run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats


def _cv(x: np.ndarray) -> float:
    m = float(x.mean()) if x.size else math.nan
    return float(x.std() / m) if x.size and m > 0 else math.nan


def replay_fidelity(
    t_intended: np.ndarray,
    t_sent: np.ndarray,
    *,
    alpha: float = 0.01,
    paired: bool | None = None,
) -> dict[str, Any]:
    """Compare intended and realised inter-arrival times (see the module docstring).

    NaN send times (requests never sent) are left out and counted. ``paired`` (default: when
    both arrays have the same length) also reports the per-request send lag.
    """
    ti = np.sort(np.asarray(t_intended, dtype=np.float64))
    ts_raw = np.asarray(t_sent, dtype=np.float64)
    if paired is None:
        paired = ti.size == ts_raw.size
    unsent = int(np.isnan(ts_raw).sum())
    ts = np.sort(ts_raw[~np.isnan(ts_raw)])
    if ti.size < 3 or ts.size < 3:
        raise ValueError(f"need at least 3 intended and 3 sent times, got {ti.size} and "
                         f"{ts.size}")
    gi, gs = np.diff(ti), np.diff(ts)
    ks = stats.ks_2samp(gi, gs)
    out: dict[str, Any] = {
        "n_intended": int(ti.size), "n_sent": int(ts.size), "unsent": unsent,
        "ks_stat": float(ks.statistic), "ks_pvalue": float(ks.pvalue), "alpha": alpha,
        "same_distribution": bool(ks.pvalue >= alpha),
        "cv_intended": _cv(gi), "cv_sent": _cv(gs),
        "rate_intended": float(gi.size / (ti[-1] - ti[0])) if ti[-1] > ti[0] else math.nan,
        "rate_sent": float(gs.size / (ts[-1] - ts[0])) if ts[-1] > ts[0] else math.nan,
    }
    if paired:
        ok = ~np.isnan(ts_raw)
        lag = ts_raw[ok] - np.asarray(t_intended, dtype=np.float64)[ok]
        out["send_lag_s"] = {"p50": float(np.percentile(lag, 50)),
                             "p99": float(np.percentile(lag, 99)), "max": float(lag.max())}
    return out
