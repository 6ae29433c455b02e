"""Multi-turn sessions in a run: how many, and did follow-up turns go out on time?

For each recorded turn k+1 whose turn k is recorded too (same ``session_id``):

    think intended = t_intended(k+1) - t_done(k)   (the think time the workload asked for)
    think realised = t_sent(k+1) - t_done(k)       (what the server saw between the turns)

Their difference is turn k+1's send lag, the generator's own lateness, which the validity
verdict already counts with every other request's. Follow-up turns are not on the seeded
schedule, so the inter-arrival tests of the self-check and of replay fidelity use first
turns only (:func:`first_turn_mask`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from analysis.histograms import describe_ms
from analysis.metrics import col


def first_turn_mask(table: pa.Table) -> np.ndarray:
    """Records on the schedule: first turns of sessions and every request without one."""
    if "turn" not in table.column_names:
        return np.ones(len(table), dtype=bool)
    turn = table.column("turn").to_numpy(zero_copy_only=False)
    return np.array([t is None or t != t or t == 0 for t in turn.tolist()], dtype=bool)


def _ms(x: np.ndarray) -> dict[str, Any]:
    d = describe_ms(x)
    d.pop("hdr", None)
    return d


def session_summary(table: pa.Table) -> dict[str, Any] | None:
    """The summary's ``sessions`` section; None for a run without sessions."""
    if "session_id" not in table.column_names:
        return None
    sid = table.column("session_id").to_pylist()
    if all(s is None for s in sid):
        return None
    turn = table.column("turn").to_pylist()
    status = table.column("status").to_pylist()
    t_int, t_sent, t_done = (col(table, c) for c in ("t_intended", "t_sent", "t_done"))
    where = {(s, k): i for i, (s, k) in enumerate(zip(sid, turn, strict=True)) if s is not None}
    think_int, think_real = [], []
    failed_then_continued = 0
    for (s, k), i in where.items():
        if k == 0:
            continue
        j = where.get((s, k - 1))
        if j is None:
            continue
        think_int.append(t_int[i] - t_done[j])
        if np.isfinite(t_sent[i]):
            think_real.append(t_sent[i] - t_done[j])
        if status[j] != "ok":
            failed_then_continued += 1
    sessions = {s for s in sid if s is not None}
    per = np.bincount(np.unique([s for s in sid if s is not None], return_inverse=True)[1])
    follow = sum(1 for s, k in zip(sid, turn, strict=True) if s is not None and k)
    return {
        "sessions": len(sessions),
        "turns_recorded": int(sum(1 for s in sid if s is not None)),
        "follow_up_turns_recorded": follow,
        "turns_per_session": {"mean": float(per.mean()), "max": int(per.max())},
        "think_ms_intended": _ms(np.asarray(think_int)) if think_int else None,
        "think_ms_realised": _ms(np.asarray(think_real)) if think_real else None,
        "turns_after_a_failed_turn": failed_then_continued,
        "policy": "a failed turn does not end its session: the next turn is sent a think "
                  "time after the failure (bodies and history were built before t0)",
    }
