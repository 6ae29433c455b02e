"""The batching engine on its own (no HTTP): schedule, FIFO, early stop, abort, pause."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from itertools import pairwise

import pytest
import uvloop

from servers.sim.clock import DeadlineSleeper, clock
from servers.sim.engine import Engine, Sequence
from servers.sim.model import SimCosts, step_time
from servers.sim.tokens import TokenStream

FREE = SimCosts(step_base=0.0, step_per_seq=0.0, prefill_per_token=0.0)


def run_with_engine(engine: Engine, body: Callable[[Engine], Awaitable[None]]) -> None:
    async def main() -> None:
        engine.start()
        try:
            await asyncio.wait_for(body(engine), timeout=10)
        finally:
            await engine.stop()

    uvloop.run(main())


def seq(n: int, prompt: int = 10, max_tokens: int = 4, **kw: object) -> Sequence:
    return Sequence(n, prompt, max_tokens, TokenStream(0, n), **kw)  # type: ignore[arg-type]


async def finish(s: Sequence) -> None:
    while s.finish_reason is None:
        await s.wait()


def test_schedule_follows_the_model_exactly() -> None:
    # A arrives at an idle engine and is prefilled alone; B arrives just after the iteration
    # started, waits for it, then both decode together:
    #   it1: B=1 P=10 -> A token 1        it2: B=2 P=30 -> A token 2, B token 1
    #   it3: B=2 P=0  -> A token 3 (done), B token 2      it4: B=1 P=0 -> B token 3 (done)
    costs = SimCosts(step_base=0.004, step_per_seq=0.001, prefill_per_token=0.0001)
    a, b = seq(0, prompt=10, max_tokens=3), seq(1, prompt=30, max_tokens=3)

    async def body(engine: Engine) -> None:
        engine.submit(a)
        engine.submit(b)
        await finish(a)
        await finish(b)

    engine = Engine(costs, max_batch=4)
    run_with_engine(engine, body)
    it1, it2 = step_time(costs, 1, 10), step_time(costs, 2, 30)
    it3, it4 = step_time(costs, 2, 0), step_time(costs, 1, 0)
    assert engine.resyncs_total == 0
    assert a.timings() == pytest.approx(
        {"queue_s": 0.0, "prefill_s": it1, "decode_s": it2 + it3}, abs=1e-9)
    assert b.t_admitted == pytest.approx(a.t_arrival + it1, abs=1e-9)
    assert b.timings()["prefill_s"] == pytest.approx(it2, abs=1e-9)
    assert b.timings()["decode_s"] == pytest.approx(it3 + it4, abs=1e-9)
    assert (engine.steps_total, engine.generation_tokens_total, engine.prompt_tokens_total) == (
        4, 6, 40)
    assert (a.finish_reason, b.finish_reason, engine.requests_finished_total) == (
        "length", "length", 2)


def test_full_batch_queues_fifo() -> None:
    seqs = [seq(i, max_tokens=2) for i in range(5)]

    async def body(engine: Engine) -> None:
        engine.pause(0.01)  # let all five arrive before the first iteration
        for s in seqs:
            engine.submit(s)
        assert (engine.num_waiting, engine.num_running) == (5, 0)
        await finish(seqs[1])
        assert (engine.num_running, engine.num_waiting) == (2, 1)  # 2 and 3 took the slots
        for s in seqs:
            await finish(s)

    run_with_engine(Engine(SimCosts(step_base=0.002), max_batch=2), body)
    admitted = [s.t_admitted for s in seqs]
    assert admitted == sorted(admitted)
    assert admitted[0] == admitted[1] < admitted[2] == admitted[3] < admitted[4]  # type: ignore[operator]


def test_early_stop_respects_min_tokens_and_ignore_eos() -> None:
    free = [seq(i, max_tokens=30, min_tokens=5) for i in range(40)]
    ignoring = [seq(100 + i, max_tokens=30, ignore_eos=True) for i in range(10)]

    async def body(engine: Engine) -> None:
        for s in free + ignoring:
            engine.submit(s)
        for s in free + ignoring:
            await finish(s)

    run_with_engine(Engine(FREE, max_batch=64, eos_prob=0.2), body)
    stopped = [s for s in free if s.finish_reason == "stop"]
    assert len(stopped) > 20  # P(no stop in 25 draws) = 0.8**25 ~ 0.4%
    assert all(5 <= s.generated < 30 for s in stopped)
    assert all(s.generated == 30 for s in free if s.finish_reason == "length")
    assert all(s.finish_reason == "length" and s.generated == 30 for s in ignoring)
    # The stop point is the first eligible draw below eos_prob: a function of the seed.
    for s in stopped:
        k = s.generated - 1
        assert s.tokens.eos_draw(k) < 0.2
        assert all(s.tokens.eos_draw(j) >= 0.2 for j in range(4, k))


def test_abort_frees_the_slot_and_wakes_the_handler() -> None:
    long, queued, next_ = seq(0, max_tokens=10_000), seq(1), seq(2, max_tokens=1)

    async def body(engine: Engine) -> None:
        engine.submit(long)
        engine.submit(queued)
        engine.submit(next_)
        while long.generated < 3:
            await long.wait()
        engine.abort(queued)  # still waiting: leaves the queue
        waiter = asyncio.ensure_future(long.wait())
        await asyncio.sleep(0)  # the handler is now parked in wait()
        engine.abort(long)  # running: leaves the batch
        await asyncio.wait_for(waiter, 0.1)
        await finish(next_)

    engine = Engine(SimCosts(step_base=0.002), max_batch=1)
    run_with_engine(engine, body)
    assert (long.finish_reason, queued.finish_reason, next_.finish_reason) == (
        "abort", "abort", "length")
    assert long.generated < 100 and queued.generated == 0
    assert (engine.requests_aborted_total, engine.num_running, engine.num_waiting) == (2, 0, 0)


def test_pause_holds_emission_for_its_duration() -> None:
    s = seq(0, max_tokens=6)
    times: list[float] = []

    async def body(engine: Engine) -> None:
        engine.submit(s)
        while s.finish_reason is None:
            await s.wait()
            times.append(clock())
            if s.generated == 2:
                engine.pause(0.1)

    run_with_engine(Engine(SimCosts(step_base=0.003), max_batch=1), body)
    gaps = [b - a for a, b in pairwise(times)]
    assert len(times) == 6
    assert gaps[1] >= 0.1
    assert max(gaps[:1] + gaps[2:]) < 0.05


@pytest.mark.parametrize("use_timerfd", [True, False])
def test_deadline_sleeper_never_wakes_early(use_timerfd: bool) -> None:
    async def main() -> list[float]:
        sleeper = DeadlineSleeper(use_timerfd)
        assert sleeper.kind == ("timerfd" if use_timerfd and sys.platform == "linux" else "loop")
        errors = []
        try:
            for _ in range(30):
                deadline = clock() + 0.0021
                await sleeper.sleep_until(deadline)
                errors.append(clock() - deadline)
        finally:
            sleeper.close()
        return errors

    errors = uvloop.run(main())
    assert min(errors) >= 0.0
    assert sorted(errors)[len(errors) // 2] < 0.002  # median lateness well under a ms or two
