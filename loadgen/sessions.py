"""The engine's side of multi-turn sessions: what to send after a turn ends, and when.

Only first turns are paced by the schedule (they arrive open-loop, never re-anchored). When
turn k of a session finishes, whatever its status, turn k+1 is due at

    t_intended(k+1) = t_done(k) + think_s(k+1)

(seconds from t0), and that is the ``t_intended`` its record carries, so latency from
intended and the send lag (t_sent - t_intended) stay honest for follow-up turns too.

A failed turn does not end its session: the next turn's body was built before t0 from the
recorded history, so it is still a valid request, and sending it keeps the work the same for
every system compared (a user whose answer failed would ask again). Only cancellation (Ctrl-C,
SIGTERM) stops sessions: turns not yet due then are not sent and have no record, like first
turns whose time had not come.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import numpy as np

from arrivals.sessions import Sessions


class TurnChain:
    """Follow-up turns of a session workload (plain lists: read on the event loop)."""

    __slots__ = ("_next", "_think", "session_id", "turn", "stopped", "due")

    def __init__(self, sessions: Sessions) -> None:
        self._next: list[int] = np.asarray(sessions.next_turn).tolist()
        self._think: list[float] = np.asarray(sessions.think_s, dtype=np.float64).tolist()
        self.session_id: list[str] = sessions.session_id
        self.turn: list[int] = np.asarray(sessions.turn).tolist()
        self.stopped = False  # set when the run is cancelled: no new turn is started
        self.due = 0  # follow-up turns whose intended time has come

    @staticmethod
    def first_turns(sessions: Sessions, t_intended: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The paced requests: first-turn indices and their intended times (non-decreasing)."""
        idx = sessions.first
        return idx, np.ascontiguousarray(t_intended[idx], dtype=np.float64)

    def after(self, k: int, t_done: float, now: float) -> tuple[int, float] | None:
        """The next turn of request k's session and its intended time, or None (last turn,
        or the run is stopping). ``now`` stands in for a missing ``t_done``."""
        j = self._next[k]
        if j < 0 or self.stopped:
            return None
        end = t_done if not math.isnan(t_done) else now
        return j, end + self._think[j]


async def wait_until(t_abs: float, clock: Callable[[], float], spin_s: float) -> None:
    """Sleep until ``clock() >= t_abs``: on a timer until ``spin_s`` before, then yielding to
    the loop (as the pacer does, loadgen/pacer.py), so a turn is not sent a timer tick late."""
    sleep = asyncio.sleep
    while True:
        wait = t_abs - clock()
        if wait <= 0:
            return
        await sleep(wait - spin_s if wait > spin_s else 0)
