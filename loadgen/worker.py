"""One worker's share of a run: prepared before t0, run from a common t0, reported at the end.

The same code runs in a local worker process (loadgen/workers.py) and in a Ray actor
(loadgen/distributed/ray_runner.py). A worker

1. ``prepare``: builds every request body of its share (JSON encoded), imports what the
   records thread would import mid-run and freezes the heap, all before t0;
2. ``run(t0)``: runs ``loadgen.engine.run_engine`` with the common ``t0`` (perf_counter, i.e.
   CLOCK_MONOTONIC) and writes its records with a ``RecordWriter`` to its own Parquet file,
   with the **global** request ids (its share's local index k is mapped to ``ids[k]``),
   and its once-a-second time series, crash-safe, beside them (``timeseries_path``), so
   that a run whose parent died can be merged from the files alone (analysis/load.py);
   with ``live_metrics`` it also queues each finished request's times (one append, as in
   one process) for the parent's live endpoint, taken once a second (``take_live``);
3. reports what the parent needs to merge without re-reading lists: counters, CPU and wall
   time, its time series rows, and encoded HdrHistograms (send lag, TTFT, E2E, event-loop
   lag) that the parent adds (analysis/histograms.py ``combine_described``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arrivals.workload import Workload
from loadgen.clients.base import Client, as_client
from loadgen.engine import EngineOptions, EngineResult, run_engine
from loadgen.merge import TS_SCHEMA, timeseries_path, timeseries_table
from loadgen.records import Record, RecordWriter
from loadgen.stream_table import StreamTableWriter


@dataclass
class WorkerJob:
    """What one worker needs; picklable (sent to a spawned process or a Ray actor)."""

    worker: int
    workload: Workload  # this worker's share (loadgen.split.subset_workload)
    ids: np.ndarray  # global request id of each request of the share
    client: Any  # a loadgen Client or an OpenAI ClientConfig
    engine: EngineOptions  # worker= this worker's number, its share of the limits
    records_path: Path
    keep_chunk_times: bool = True
    input_tokens_tokenize: list[int | None] | None = None  # this share's, --count-tokens-with-server
    live_metrics: bool = False  # queue finished requests for the parent's --metrics-port


class GlobalIds:
    """A record writer that stores each record under its global request id."""

    def __init__(self, inner: RecordWriter, ids: np.ndarray) -> None:
        self.inner, self._ids, self._add = inner, ids.tolist(), inner.add

    def add(self, rec: Record) -> None:
        rec.request_id = self._ids[rec.request_id]
        self._add(rec)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class PreparedWorker:
    def __init__(self, job: WorkerJob) -> None:
        t = time.perf_counter()
        import pyarrow as pa

        self.job = job
        self.client: Client = as_client(job.client)
        self.bodies = self.client.prepare(job.workload)
        self.live: Any = None
        if job.live_metrics:
            from loadgen.telemetry.live import RowBatch

            self.live = RowBatch()
        pa.array([0.0])  # see loadgen/run.py execute: imports of the records thread, before t0
        gc.collect()
        gc.freeze()
        self.prepare_s = time.perf_counter() - t

    def take_live(self) -> list[tuple] | None:
        """The finished requests queued for the live endpoint since the last call (None: the
        endpoint is off); safe from any thread (a Ray actor's other thread)."""
        return self.live.take() if self.live is not None else None

    async def run(self, t0: float, *, on_progress: Callable[[EngineResult, float], None] | None = None,
                  on_task: Callable[[Any], None] | None = None) -> dict[str, Any]:
        """Run the share from ``t0``; ``on_task(task)`` receives the engine task (to cancel it
        on Ctrl-C). Cancellation records in-flight requests as cancelled and returns normally,
        with ``interrupted`` set."""
        import asyncio

        job = self.job
        Path(job.records_path).parent.mkdir(parents=True, exist_ok=True)
        writer = RecordWriter(Path(job.records_path), keep_chunk_times=job.keep_chunk_times)
        ts_stream = StreamTableWriter(timeseries_path(job.records_path), TS_SCHEMA)
        ts_done = [0]

        def ts_append(rows: list[tuple]) -> None:
            with contextlib.suppress(OSError):  # the records' own error stops the run
                ts_stream.append(timeseries_table(rows))

        def progress(res: EngineResult, now: float) -> None:
            if writer.failed and not task.cancelled():  # disk full: stop, as one process does
                task.cancel()
            rows = res.timeseries
            if len(rows) > ts_done[0] and not writer.closed:
                writer.submit(ts_append, rows[ts_done[0]:])
                ts_done[0] = len(rows)
            if on_progress is not None:
                on_progress(res, now)

        sink: Any = GlobalIds(writer, job.ids)
        if self.live is not None:
            from loadgen.telemetry.live import ObservingWriter

            sink = ObservingWriter(sink, self.live)
        task = asyncio.get_running_loop().create_task(run_engine(
            job.workload, self.client, sink, job.engine, bodies=self.bodies,
            on_progress=progress, t0=t0, input_tokens_tokenize=job.input_tokens_tokenize))
        if on_task is not None:
            on_task(task)
        try:
            res = await task
        except asyncio.CancelledError:  # cancelled before the engine started
            res = EngineResult(t0=t0, t0_unix=time.time() + (t0 - time.perf_counter()),
                               interrupted=True)
        finally:
            writer.close()  # after the records thread's last ts_append (the engine's last
            # progress call, at its end, submitted the last rows)
            with contextlib.suppress(OSError):
                ts_stream.close(convert=True)
        rep = report(job, res, writer.n_written, self.prepare_s)
        rep["lost"] = writer.n_lost
        rep["write_error"] = f"{type(writer.error).__name__}: {writer.error}" if writer.error else None
        return rep


def report(job: WorkerJob, res: EngineResult, n_written: int, prepare_s: float) -> dict[str, Any]:
    """What the parent merges: plain data (picklable, JSON-safe except the time series)."""
    import pyarrow.parquet as pq

    from analysis.histograms import describe_ms
    from analysis.metrics import derive

    d = derive(pq.read_table(job.records_path))
    c = res.counters
    return {
        "worker": job.worker,
        "pid": os.getpid(),
        "requests": len(job.workload),
        "recorded": n_written,
        "interrupted": res.interrupted,
        "t0": res.t0,
        "t0_unix": res.t0_unix,
        "wall_s": res.wall_s,
        "cpu_s": res.cpu_s,
        "prepare_s": prepare_s,
        "counters": {"started": c.started, "sent": c.sent, "done": c.done, "failed": c.failed},
        "timeseries": [tuple(r) for r in res.timeseries],
        "send_lag_ms": describe_ms(d.send_lag),
        "ttft_ms": describe_ms(d.ttft_sent),
        "e2e_ms": describe_ms(d.e2e_sent),
        "event_loop_lag_ms": describe_ms(res.loop_lag_s),
    }
