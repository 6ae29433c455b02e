"""Continuous-batching engine: a FIFO queue, a running batch, one token per iteration.

Each iteration (times on ``clock()``, see servers.sim.clock):

    1. admit waiting requests into free slots, FIFO, if they arrived by the iteration start
    2. dt    = step_time(costs, B, P)   B = running after admission, P = prompt tokens admitted
       t_end = t_start + dt             an absolute deadline: wake-up errors never accumulate
    3. sleep until t_end; every running sequence emits ONE token (a sequence admitted in this
       iteration emits its first token here, as vLLM does); those that reached max_tokens, or
       drew an early stop, finish and leave
    4. the next iteration starts at t_start = t_end (back to back); when idle, the engine waits
       for a request and the iteration starts at that request's arrival time

If the loop falls behind by more than ``MAX_LAG_S`` (a blocked event loop), the schedule is
re-anchored at the present and ``resyncs_total`` counts it: up to that lag, later iterations
catch up, so the mean token rate stays the model's. ``pause(s)`` holds all emission for ``s``
seconds while the queue keeps accepting; the schedule restarts after it.

Handlers see their sequence through ``Sequence.generated``/``finish_reason`` and await
``Sequence.wait()``, a one-shot future per wake-up (cheaper than an asyncio.Queue per request).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from servers.sim.clock import DeadlineSleeper, clock
from servers.sim.model import SimCosts, step_time
from servers.sim.tokens import TokenStream

MAX_LAG_S = 0.005
"""Lateness of the loop (seconds) that is caught up; beyond it the schedule is re-anchored."""


class Sequence:
    """One request inside the engine, with its progress and its engine-timeline timestamps."""

    __slots__ = (
        "number", "prompt_tokens", "max_tokens", "min_tokens", "ignore_eos", "tokens",
        "generated", "finish_reason",
        "t_arrival", "t_admitted", "t_first_token", "t_done", "_waiter",
    )  # fmt: skip

    def __init__(
        self,
        number: int,
        prompt_tokens: int,
        max_tokens: int,
        tokens: TokenStream,
        *,
        min_tokens: int = 0,
        ignore_eos: bool = False,
    ) -> None:
        self.number = number
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self.ignore_eos = ignore_eos
        self.tokens = tokens
        self.generated = 0
        """Tokens emitted so far."""
        self.finish_reason: str | None = None
        """None while queued or running; then "length", "stop" or "abort"."""
        self.t_arrival = 0.0
        self.t_admitted: float | None = None
        self.t_first_token: float | None = None
        self.t_done: float | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        """Wait until the engine emits the next token or ends the sequence (at once if ended)."""
        if self.finish_reason is not None:
            return
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def timings(self) -> dict[str, float]:
        """Seconds on the engine timeline (scheduled iteration boundaries):

        queue_s   = t_admitted - t_arrival        waiting for a slot (and an iteration start)
        prefill_s = t_first_token - t_admitted    the prefill iteration (plus any pause)
        decode_s  = t_done - t_first_token        the decode iterations

        Fields not reached yet (an aborted sequence) are 0.
        """
        admitted = self.t_admitted if self.t_admitted is not None else self.t_arrival
        first = self.t_first_token if self.t_first_token is not None else admitted
        done = self.t_done if self.t_done is not None else first
        return {
            "queue_s": max(0.0, admitted - self.t_arrival),
            "prefill_s": max(0.0, first - admitted),
            "decode_s": max(0.0, done - first),
        }


class Engine:
    """The batching loop. ``start()`` inside a running loop; ``await stop()`` at the end."""

    def __init__(
        self,
        costs: SimCosts,
        max_batch: int,
        eos_prob: float = 0.0,
        *,
        use_timerfd: bool = True,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        if not 0.0 <= eos_prob <= 1.0:
            raise ValueError(f"eos_prob must be a probability in [0, 1], got {eos_prob!r}")
        self.costs = costs
        self.max_batch = max_batch
        self.eos_prob = eos_prob
        self._use_timerfd = use_timerfd
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._wake = asyncio.Event()
        self._paused_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._sleeper: DeadlineSleeper | None = None
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.requests_finished_total = 0
        self.requests_aborted_total = 0
        self.steps_total = 0
        self.resyncs_total = 0
        self.wake_late_s_total = 0.0
        """Sum over iterations of (actual wake-up - scheduled end): the emission error."""
        self.wake_late_s_max = 0.0

    # -- gauges -------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def sleeper_kind(self) -> str:
        """"timerfd" or "loop" (see servers.sim.clock); "" before start."""
        return self._sleeper.kind if self._sleeper is not None else ""

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is not None:
            raise RuntimeError("Engine.start() called twice")
        self._sleeper = DeadlineSleeper(self._use_timerfd)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-engine")

    async def stop(self) -> None:
        """Stop the loop and abort every queued and running sequence (their handlers return)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for seq in [*self._waiting, *self._running]:
            self.abort(seq)
        if self._sleeper is not None:
            self._sleeper.close()
            self._sleeper = None

    # -- requests -----------------------------------------------------------------------
    def submit(self, seq: Sequence) -> None:
        """Queue ``seq`` (FIFO); its arrival time is now."""
        if self._task is None:
            raise RuntimeError("Engine.submit() before Engine.start()")
        seq.t_arrival = clock()
        self._waiting.append(seq)
        self._wake.set()

    def abort(self, seq: Sequence) -> None:
        """Remove ``seq`` from the queue or the batch (client gone); no-op if it has ended."""
        if seq.finish_reason is not None:
            return
        if seq.t_admitted is None:
            with contextlib.suppress(ValueError):
                self._waiting.remove(seq)
        else:
            with contextlib.suppress(ValueError):
                self._running.remove(seq)
        seq.finish_reason = "abort"
        seq.t_done = clock()
        self.requests_aborted_total += 1
        seq._wake()

    def pause(self, seconds: float) -> None:
        """Hold all emission for ``seconds`` from now (extends a pause in progress)."""
        if not seconds >= 0:
            raise ValueError(f"pause seconds must be >= 0, got {seconds!r}")
        self._paused_until = max(self._paused_until, clock() + seconds)

    # -- the loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        sleeper = self._sleeper
        assert sleeper is not None
        # End of the previous iteration on the schedule; None when the engine was idle.
        t_prev_end: float | None = None
        while True:
            if not self._running and not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                t_prev_end = None
                continue
            if self._paused_until > clock():
                t_prev_end = await self._hold(sleeper)
                continue
            if t_prev_end is not None:
                t_start = t_prev_end  # back to back on the schedule, not on the wake-up
            else:  # idle until the first waiting request arrived: the iteration starts then
                t_start = self._waiting[0].t_arrival
            now = clock()
            if now - t_start > MAX_LAG_S:
                self.resyncs_total += 1
                t_start = now
            prefill = self._admit(t_start)
            if not self._running:
                # All finished at t_prev_end and the queue holds only later arrivals: the
                # engine was idle in between, so start at the first one's arrival.
                t_prev_end = None
                continue
            # dt = step_base + step_per_seq * B + prefill_per_token * P
            t_end = t_start + step_time(self.costs, len(self._running), prefill)
            await sleeper.sleep_until(t_end)
            if self._paused_until > t_end:  # a pause came during the iteration: hold it
                t_end = await self._hold(sleeper)
            late = clock() - t_end
            self.wake_late_s_total += late
            if late > self.wake_late_s_max:
                self.wake_late_s_max = late
            self.steps_total += 1
            self._emit(t_end)
            t_prev_end = t_end

    async def _hold(self, sleeper: DeadlineSleeper) -> float:
        """Sleep out the pause (also if extended meanwhile); return the time it ended."""
        while (until := self._paused_until) > clock():
            await sleeper.sleep_until(until)
        return until

    def _admit(self, t_start: float) -> int:
        """Move waiting sequences that arrived by ``t_start`` into free slots; return P."""
        prefill = 0
        free = self.max_batch - len(self._running)
        waiting = self._waiting
        while free > 0 and waiting and waiting[0].t_arrival <= t_start:
            seq = waiting.popleft()
            seq.t_admitted = t_start
            self._running.append(seq)
            prefill += seq.prompt_tokens
            free -= 1
        self.prompt_tokens_total += prefill
        return prefill

    def _emit(self, t_end: float) -> None:
        """Every running sequence emits one token; finished ones leave the batch."""
        eos_prob = self.eos_prob
        still: list[Sequence] = []
        finished = 0
        for seq in self._running:
            k = seq.generated  # index of the token emitted now
            seq.generated = n = k + 1
            if k == 0:
                seq.t_first_token = t_end
            if n >= seq.max_tokens:
                seq.finish_reason = "length"
            elif (
                eos_prob > 0.0
                and not seq.ignore_eos
                and n >= seq.min_tokens
                and seq.tokens.eos_draw(k) < eos_prob
            ):
                seq.finish_reason = "stop"
            if seq.finish_reason is None:
                still.append(seq)
            else:
                seq.t_done = t_end
                finished += 1
            seq._wake()
        self.generation_tokens_total += len(self._running)
        self.requests_finished_total += finished
        self._running = still
