"""Superposition: several arrival processes sent at once (e.g. two tenants, chat + batch).

The merged stream's points are the union of the components' points. Over a common horizon
H, its mean rate is the sum of the components' rates (counts add). Superposing independent
Poisson processes gives a Poisson process (CV 1); superposing many independent renewal
processes tends to Poisson too (Palm-Khintchine), so burstiness of one tenant is diluted by
others. Each component is a finite sample; the merge is cut at the horizon H = the smallest
component's last time (default), so no component runs out early and the rate stays the sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def superpose(
    schedules: Sequence[np.ndarray], *, horizon: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Merge arrival-time arrays; returns (sorted times, index of the component of each).

    Points after ``horizon`` (default: min over components of their last time) are dropped.
    The sort is stable, so equal times keep component order.
    """
    if not schedules:
        raise ValueError("superpose needs at least one schedule")
    arrays = [np.asarray(s, dtype=np.float64) for s in schedules]
    if any(a.size == 0 for a in arrays):
        raise ValueError("superpose: every component must have at least one arrival")
    h = min(float(a[-1]) for a in arrays) if horizon is None else float(horizon)
    t = np.concatenate(arrays)
    src = np.concatenate([np.full(a.size, j, dtype=np.int64) for j, a in enumerate(arrays)])
    order = np.argsort(t, kind="stable")
    t, src = t[order], src[order]
    keep = t <= h
    return t[keep], src[keep]
