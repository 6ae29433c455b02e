"""The pacer releases each request at its intended time, never before, never re-anchored."""

import asyncio
import time

import numpy as np

from loadgen.pacer import releases


async def _collect(t, t0, clock=time.perf_counter):
    out = []
    async for i, j in releases(t, t0, clock=clock):
        now = clock() - t0
        out.extend((k, now) for k in range(i, j))
    return out


def test_every_request_is_released_in_order_and_never_early():
    t = np.cumsum(np.random.default_rng(0).exponential(0.002, 300))
    t0 = time.perf_counter() + 0.01
    got = asyncio.run(_collect(t, t0))
    assert [k for k, _ in got] == list(range(300))
    early = np.array([now - t[k] for k, now in got])
    assert early.min() >= 0.0


def test_a_late_start_releases_the_backlog_at_once_and_keeps_later_times():
    # The pacer starts 50 ms after t0: requests due before then go out together; later ones
    # still keep their own times (no re-anchoring of the schedule to the late start).
    t = np.array([0.0, 0.01, 0.02, 0.03, 0.2])
    t0 = time.perf_counter() - 0.05
    got = asyncio.run(_collect(t, t0))
    assert [k for k, _ in got] == [0, 1, 2, 3, 4]
    assert got[3][1] < 0.1  # backlog released immediately
    assert got[4][1] >= 0.2  # the last one still waits for its own time


def test_a_blocked_event_loop_does_not_shift_the_schedule():
    t = np.array([0.02, 0.04, 0.06, 0.08])

    async def main():
        t0 = time.perf_counter()

        async def block():
            await asyncio.sleep(0.01)
            time.sleep(0.045)  # the loop is stuck from 10 to 55 ms

        b = asyncio.create_task(block())
        got = await _collect(t, t0)
        await b
        return got

    got = asyncio.run(main())
    lag = {k: now - t[k] for k, now in got}
    assert lag[0] > 0.02 and lag[1] > 0.0  # released late, at ~55 ms, together
    assert lag[3] < 0.015  # the schedule resumes on its original times
