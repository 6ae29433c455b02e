"""The open-loop engine: replay a workload's schedule against one endpoint and record everything.

For request i the engine starts a task at t0 + t_intended[i] (monotonic clock) whether or not
earlier requests have finished; it never waits for the server before sending (open loop). With
``max_concurrency`` set, each task first waits for one of N slots (closed loop, clearly
labelled); that wait is recorded as ``slot_wait`` and never hidden.

With multi-turn sessions (``workload.sessions``) only first turns follow the schedule; each
later turn is started a think time after the previous turn of its session ends, with that
time as its ``t_intended`` (loadgen/sessions.py says what happens on failure and Ctrl-C).

Alongside the requests the engine measures itself: event-loop lag (how late a 10 ms timer
fires), process CPU time, and a per-second time series of intended/sent/done/in-flight.
"""

from __future__ import annotations

import asyncio
import resource
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arrivals.workload import Workload
from loadgen.clients.base import Client, as_client
from loadgen.clients.pool import make_session  # noqa: F401  (re-exported: older imports)
from loadgen.pacer import releases
from loadgen.records import Record, RecordWriter
from loadgen.sessions import TurnChain, wait_until

LOOP_PROBE_S = 0.010


@dataclass(frozen=True)
class EngineOptions:
    max_concurrency: int | None = None
    connection_limit: int = 0  # 0: no limit on simultaneous connections
    keepalive: bool = True  # False (--no-keepalive): a new TCP connection for every request
    read_bufsize: int = 1 << 20  # aiohttp read buffer: long contexts come in large chunks
    worker: int = 0
    spin_s: float = 0.0005  # see loadgen/pacer.py: precision vs CPU
    sample_interval_s: float = 1.0


@dataclass
class Counters:
    started: int = 0
    sent: int = 0
    done: int = 0
    failed: int = 0
    in_flight: int = 0


@dataclass
class EngineResult:
    t0: float  # perf_counter at t0
    t0_unix: float  # wall clock at t0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    interrupted: bool = False
    counters: Counters = field(default_factory=Counters)
    loop_lag_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    timeseries: list[tuple] = field(default_factory=list)


TIMESERIES_COLUMNS = ("t", "intended", "started", "sent", "done", "failed", "in_flight",
                      "loop_lag_max_ms", "cpu_s")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def prepare_bodies(workload: Workload, client: Any) -> Sequence[Any]:
    """Every request payload, built before t0 so the event loop only sends prepared bytes."""
    return as_client(client).prepare(workload)


async def run_engine(
    workload: Workload,
    client: Client | Any,
    writer: RecordWriter,
    opts: EngineOptions = EngineOptions(),
    *,
    bodies: Sequence[Any] | None = None,
    input_tokens_tokenize: Sequence[int | None] | None = None,
    on_progress: Callable[[EngineResult, float], None] | None = None,
    start_delay_s: float = 0.05,
    t0: float | None = None,
) -> EngineResult:
    """Send every request of ``workload`` at its intended time; return when all are recorded.

    ``t0``: the run's start on ``time.perf_counter`` (CLOCK_MONOTONIC, shared by every process
    of the machine), so that several worker processes share one schedule (loadgen/workers.py);
    default: ``start_delay_s`` after the connection pool is open.

    Cancelling this coroutine (Ctrl-C) cancels the in-flight requests, records them as
    ``cancelled`` and returns with ``interrupted=True``; requests not yet due are not sent.
    ``input_tokens_tokenize`` (one per request, from the server's tokenize endpoint before
    t0) is copied into the records.
    """
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    client = as_client(client)
    bodies = bodies if bodies is not None else client.prepare(workload)
    t_int = np.ascontiguousarray(workload.t_intended, dtype=np.float64)
    t_int_list = t_int.tolist()
    chain = TurnChain(workload.sessions) if workload.sessions is not None else None
    if chain is not None:
        paced_idx, t_paced = TurnChain.first_turns(workload.sessions, t_int)
        paced = paced_idx.tolist()
    else:
        paced, t_paced = None, t_int
    tok_counts = input_tokens_tokenize
    exp_in = workload.input_tokens.tolist()
    exp_out = workload.output_tokens.tolist()
    item_ids = workload.item_ids
    dataset = workload.dataset
    sem = asyncio.Semaphore(opts.max_concurrency) if opts.max_concurrency else None
    c = Counters()
    tasks: set[asyncio.Task] = set()
    lags = array("d")  # 8 bytes a probe (100 a second), not a 32-byte float object
    ts_rows: list[tuple] = []

    async with client.connect(opts) as send:
        now = clock()
        t0 = now + start_delay_s if t0 is None else t0
        # res.timeseries grows during the run (on_progress callers may stream it to disk)
        res = EngineResult(t0=t0, t0_unix=time.time() + (t0 - now), counters=c,
                           timeseries=ts_rows)
        cpu0 = _cpu()

        async def one(k: int, t_intended: float) -> None:
            rec = Record(
                request_id=k,
                worker=opts.worker,
                t_intended=t_intended,
                expected_input_tokens=exp_in[k],
                expected_output_tokens=exp_out[k],
                dataset=dataset,
                item_id=item_ids[k] if item_ids is not None else None,
            )
            if tok_counts is not None:
                rec.input_tokens_tokenize = tok_counts[k]
            if chain is not None:
                rec.session_id, rec.turn = chain.session_id[k], chain.turn[k]
            c.started += 1
            c.in_flight += 1
            try:
                if sem is not None:
                    t_a = clock()
                    try:
                        await sem.acquire()
                    except asyncio.CancelledError:
                        rec.slot_wait = clock() - t_a
                        rec.error = "cancelled while waiting for a concurrency slot (never sent)"
                        raise
                    rec.slot_wait = clock() - t_a
                    try:
                        c.sent += 1
                        await send(bodies[k], rec, t0)
                    finally:
                        sem.release()
                else:
                    c.sent += 1
                    await send(bodies[k], rec, t0)
            finally:
                c.in_flight -= 1
                c.done += 1
                if rec.status != "ok":
                    c.failed += 1
                writer.add(rec)
                if chain is not None and rec.status != "cancelled":
                    nxt = chain.after(k, rec.t_done, clock() - t0)
                    if nxt is not None:
                        task = loop.create_task(follow_up(*nxt))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)

        async def follow_up(k: int, t_intended: float) -> None:
            """Turn k of a session: due a think time after its previous turn ended."""
            await wait_until(t0 + t_intended, clock, opts.spin_s)
            chain.due += 1
            await one(k, t_intended)

        async def probe_loop() -> None:
            while True:
                # perf_counter, not loop.time(): uvloop's loop clock has 1 ms resolution
                target = clock() + LOOP_PROBE_S
                await asyncio.sleep(LOOP_PROBE_S)
                lags.append(clock() - target)

        async def sample() -> None:
            last_cpu, last_lag_i = cpu0, 0
            while True:
                await asyncio.sleep(opts.sample_interval_s)
                now = clock() - t0
                cpu = _cpu()
                window = lags[last_lag_i:]
                last_lag_i = len(lags)
                intended = int(np.searchsorted(t_paced, now, side="right"))
                if chain is not None:
                    intended += chain.due
                ts_rows.append((now, intended, c.started, c.sent, c.done, c.failed, c.in_flight,
                                max(window) * 1e3 if window else float("nan"), cpu - last_cpu))
                last_cpu = cpu
                writer.flush()
                if on_progress is not None:
                    on_progress(res, now)

        helpers = [loop.create_task(probe_loop()), loop.create_task(sample())]
        create_task = loop.create_task
        discard = tasks.discard
        try:
            async for i, j in releases(t_paced, t0, clock=clock, spin_s=opts.spin_s):
                for m in range(i, j):
                    k = m if paced is None else paced[m]
                    task = create_task(one(k, t_int_list[k]))
                    tasks.add(task)
                    task.add_done_callback(discard)
            while tasks:
                await asyncio.wait(set(tasks))
        except asyncio.CancelledError:
            res.interrupted = True
            if chain is not None:
                chain.stopped = True
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.wait(set(tasks))
        finally:
            for h in helpers:
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            res.wall_s = clock() - t0
            res.cpu_s = _cpu() - cpu0
            res.loop_lag_s = np.asarray(lags)
            res.timeseries = ts_rows
            if on_progress is not None:
                on_progress(res, res.wall_s)
    return res
