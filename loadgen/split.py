"""Splitting ONE global schedule across N worker processes (or Ray workers).

Every worker gets a subset of the request indices, keeps their original ``t_intended`` (all
workers share one t0) and sends them open-loop; the union of the subsets is every request
exactly once, and the merged records are indexed by the global request id.

How: **by request index, round-robin** (request i goes to worker i mod N) for single
requests, and **by session** for multi-turn sessions (every turn of a session goes to the
worker that got its first turn, because a follow-up turn starts when the previous one ends,
which only the worker that sent it knows). Both are one rule: walk the requests in order;
a request whose session already has a worker goes there; any other request (a single
request, or the first turn of a session) goes to the worker with the fewest requests
assigned so far, counting every turn of a session when its first turn is placed (ties: the
lowest worker number). Without sessions this is exactly i mod N.

Why not time slices: a slice [t_k, t_k+1) would put all of the load of that moment on one
worker, so the peak rate one process must sustain would not go down. Round-robin gives each
worker 1/N of the rate at every moment (for a Poisson schedule, each worker's gaps are
Erlang-N distributed with mean N/rate: smoother than the global stream), so N workers
sustain N times the rate of one when the machine has the cores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from arrivals.workload import Workload


def _no_session(s: Any) -> bool:
    return s is None or (isinstance(s, float) and s != s) or s == "" or (
        isinstance(s, int | np.integer) and s < 0)


def split_indices(n: int, workers: int, session_ids: Sequence[Any] | np.ndarray | None = None
                  ) -> list[np.ndarray]:
    """Request indices (int64, increasing) of each of ``workers`` workers; see the module doc.

    ``session_ids[i]`` is request i's session (any hashable), or None / "" / NaN / a negative
    number for a request outside any session.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if session_ids is None:
        return [np.arange(w, n, workers, dtype=np.int64) for w in range(workers)]
    if len(session_ids) != n:
        raise ValueError(f"session_ids has {len(session_ids)} entries, expected one per request ({n})")
    sids = list(session_ids.tolist() if isinstance(session_ids, np.ndarray) else session_ids)
    size: dict[Any, int] = {}
    for s in sids:
        if not _no_session(s):
            size[s] = size.get(s, 0) + 1
    owner = np.empty(n, dtype=np.int64)
    load = [0] * workers
    placed: dict[Any, int] = {}
    for i, s in enumerate(sids):
        single = _no_session(s)
        if not single and s in placed:
            owner[i] = placed[s]
            continue
        w = min(range(workers), key=load.__getitem__)
        load[w] += 1 if single else size[s]
        owner[i] = w
        if not single:
            placed[s] = w
    return [np.flatnonzero(owner == w).astype(np.int64) for w in range(workers)]


def subset_workload(wl: Workload, idx: np.ndarray) -> Workload:
    """The requests ``idx`` of ``wl`` (same times, same order), for one worker.

    Every per-request field (a list or array with one entry per request) is indexed; the
    session structure is taken with ``Sessions.take`` (whole sessions: its ``next_turn``
    indices are renumbered for the share); other fields (dataset, description) are kept.
    """
    n = len(wl)
    idx = np.asarray(idx, dtype=np.int64)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(wl):
        v = getattr(wl, f.name)
        if f.name == "sessions":
            changes[f.name] = None if v is None else v.take(idx)
        elif isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n:
            changes[f.name] = v[idx]
        elif isinstance(v, list) and len(v) == n:
            changes[f.name] = [v[i] for i in idx.tolist()]
    return dataclasses.replace(wl, **changes)


def session_ids_of(wl: Workload) -> Sequence[Any] | None:
    """The workload's per-request session ids (``Workload.sessions.session_id``), or None
    for a workload of single requests."""
    ss = getattr(wl, "sessions", None)
    return None if ss is None else ss.session_id
