"""Multi-turn sessions: which requests belong together, in which order, after what pause.

A session (a conversation) is a chain of requests. Its first turn is scheduled like any
request: its ``t_intended`` is fixed before the run by the arrival process or the trace, and
first turns arrive open-loop. Turn k+1 cannot be scheduled before the run, because it is sent
``think_s[k+1]`` seconds after turn k's response *ends*: the engine computes its intended time
as ``t_done(k) + think_s[k+1]`` when turn k finishes. So a session workload has, per request:

    session_id[i]  the session (conversation) it belongs to
    turn[i]        0 for a session's first request, k for its (k+1)-th
    think_s[i]     for turn > 0: seconds between the end of the previous turn's response and
                   this request (the user's think time); 0 for first turns
    next_turn[i]   index of the session's next request, -1 for its last
    messages[i]    (optional) the chat history sent with request i: [system], user_0,
                   assistant_0, ..., user_k (the recorded assistant turns, not the live ones)

and ``t_intended[i]`` is NaN for every request with turn > 0 (it does not exist before the
run). Every request body, history included, is therefore built before t0, and the work sent
is the same whatever the server answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Sessions:
    """The session structure of a Workload; arrays are indexed by request id."""

    session_id: list[str]
    turn: np.ndarray  # int64
    think_s: np.ndarray  # float64 seconds (0 for first turns)
    next_turn: np.ndarray  # int64 request index, -1 = the session's last turn
    messages: list[list[dict[str, str]]] | None = None

    def __len__(self) -> int:
        return len(self.turn)

    @property
    def first(self) -> np.ndarray:
        """Indices of the first turns, in request order (the paced requests)."""
        return np.flatnonzero(np.asarray(self.turn) == 0)

    @property
    def n_sessions(self) -> int:
        return int(np.count_nonzero(np.asarray(self.turn) == 0))

    def validate(self, t_intended: np.ndarray) -> None:
        """Raise ValueError naming the first inconsistency (see the module docstring)."""
        n = len(t_intended)
        for name in ("session_id", "turn", "think_s", "next_turn"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"workload sessions.{name} has {len(getattr(self, name))} "
                                 f"rows, expected {n}")
        if self.messages is not None and len(self.messages) != n:
            raise ValueError(f"workload sessions.messages has {len(self.messages)} rows, "
                             f"expected {n}")
        if n == 0:
            return
        turn = np.asarray(self.turn, dtype=np.int64)
        nxt = np.asarray(self.next_turn, dtype=np.int64)
        think = np.asarray(self.think_s, dtype=np.float64)
        t = np.asarray(t_intended, dtype=np.float64)
        first = turn == 0
        if np.any(turn < 0):
            raise ValueError("workload sessions.turn must be >= 0")
        tf = t[first]
        if not tf.size:
            raise ValueError("workload sessions have no first turn (turn 0)")
        if not np.all(np.isfinite(tf)) or tf[0] < 0 or np.any(np.diff(tf) < 0):
            raise ValueError("workload t_intended of first turns must be finite, >= 0 and "
                             "non-decreasing in request order")
        if not np.all(np.isnan(t[~first])):
            i = int(np.flatnonzero(~first & ~np.isnan(t))[0])
            raise ValueError(f"request {i} is turn {int(turn[i])} of a session: its "
                             "t_intended must be NaN (it is computed during the run)")
        if not np.all(np.isfinite(think[~first]) & (think[~first] >= 0)):
            raise ValueError("workload sessions.think_s must be finite and >= 0 for turns > 0")
        idx = np.arange(n)
        has = nxt >= 0
        if np.any(nxt < -1) or np.any(nxt[has] >= n) or np.any(nxt[has] <= idx[has]):
            raise ValueError("workload sessions.next_turn must be -1 or the index of a later "
                             "request")
        tgt = nxt[has]
        if np.unique(tgt).size != tgt.size or tgt.size != int((~first).sum()) \
                or np.any(first[tgt]):
            raise ValueError("every turn > 0 must be the next_turn of exactly one request, "
                             "and no first turn may be")
        if np.any(turn[tgt] != turn[idx[has]] + 1):
            raise ValueError("workload sessions.next_turn must point to the turn numbered "
                             "one more")
        sid = self.session_id
        bad = [int(i) for i, j in zip(idx[has].tolist(), tgt.tolist(), strict=True)
               if sid[i] != sid[j]]
        if bad:
            raise ValueError(f"request {bad[0]} and its next turn have different session ids")

    def session_index(self) -> np.ndarray:
        """Ordinal (0..n_sessions-1, in first-turn order) of the session of each request."""
        owner = np.full(len(self.turn), -1, dtype=np.int64)
        nxt = np.asarray(self.next_turn).tolist()
        for s, f in enumerate(self.first.tolist()):
            i = f
            while i >= 0:
                owner[i] = s
                i = nxt[i]
        return owner

    def take(self, idx: np.ndarray) -> Sessions:
        """The rows ``idx`` (sorted; whole sessions), with next_turn renumbered."""
        idx = np.asarray(idx, dtype=np.int64)
        new = np.full(len(self.turn), -1, dtype=np.int64)
        new[idx] = np.arange(idx.size)
        nxt = np.asarray(self.next_turn, dtype=np.int64)[idx]
        renum = np.where(nxt >= 0, new[np.maximum(nxt, 0)], -1)
        if np.any((nxt >= 0) & (renum < 0)):
            raise ValueError("a session subset must keep every turn of the sessions it keeps")
        il = idx.tolist()
        return Sessions(
            session_id=[self.session_id[i] for i in il],
            turn=np.asarray(self.turn, dtype=np.int64)[idx],
            think_s=np.asarray(self.think_s, dtype=np.float64)[idx],
            next_turn=renum,
            messages=None if self.messages is None else [self.messages[i] for i in il],
        )

    def describe(self) -> dict[str, Any]:
        """Counts for the manifest: sessions, turns per session, think times."""
        turn = np.asarray(self.turn)
        think = np.asarray(self.think_s, dtype=np.float64)[turn > 0]
        per = np.bincount(self.session_index()) if len(turn) else np.zeros(0, np.int64)
        return {
            "sessions": self.n_sessions,
            "requests": int(turn.size),
            "follow_up_turns": int(think.size),
            "turns_per_session": {"mean": float(per.mean()) if per.size else 0.0,
                                  "max": int(per.max()) if per.size else 0},
            "think_s": {"mean": float(think.mean()), "p50": float(np.median(think)),
                        "max": float(think.max())} if think.size else None,
        }

