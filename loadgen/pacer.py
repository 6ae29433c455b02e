"""The pacer: releases request indices when their intended time has come, never before.

Open loop: the schedule ``t_intended`` (seconds from t0) is fixed before the run and never
re-anchored. If the pacer wakes up late, every request whose time has passed is released at
once and the lateness is visible in the records (t_sent - t_intended); the following requests
keep their original times.

Timers on an event loop fire up to about a millisecond late (libuv rounds to milliseconds),
so the pacer sleeps on a timer until ``spin_s`` before the next intended time, then yields to
the loop (``sleep(0)``, which still serves network I/O) until the time is reached. The spin
costs CPU only in the last ``spin_s`` before each release.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import numpy as np


async def releases(
    t_intended: np.ndarray,
    t0: float,
    *,
    clock: Callable[[], float] = time.perf_counter,
    spin_s: float = 0.001,
) -> AsyncIterator[tuple[int, int]]:
    """Yield half-open index ranges [i, j) of requests that are due, in order.

    ``t_intended`` must be sorted. Each range holds every request with t_intended <= now.
    """
    n = len(t_intended)
    i = 0
    search = np.searchsorted
    sleep = asyncio.sleep
    while i < n:
        now = clock() - t0
        nxt = t_intended[i]
        if nxt <= now:
            j = int(search(t_intended, now, side="right"))
            yield i, j
            i = j
            continue
        wait = nxt - now
        if wait > spin_s:
            await sleep(wait - spin_s)
        else:
            await sleep(0)
