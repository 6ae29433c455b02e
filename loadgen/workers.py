"""`loadgen run --workers N`: one global schedule sent by N local processes from one t0.

1. The schedule is split (loadgen/split.py: round-robin by request index, sessions kept
   whole) and each share goes to a worker process, a fresh interpreter running
   loadgen/worker_process.py (no copy of this process's threads or heap), over a socket.
2. Each worker prepares its request bodies and freezes its heap, then reports ready. When
   all are ready, the parent picks ``t0 = now + START_MARGIN_S`` on ``time.perf_counter``
   (CLOCK_MONOTONIC: one clock for every process of the machine) and sends it to all (a
   barrier, then a common start); every record of every worker is timed from that t0.
3. Each worker writes its records to ``workers/w<k>.parquet`` with its own RecordWriter;
   at the end the parent merges records, time series and HdrHistograms into the run
   directory (loadgen/merge.py) and removes the per-worker files.

Ctrl-C / SIGTERM: workers run in their own process group and ignore SIGINT; the parent
catches it and tells every worker to stop; each cancels its in-flight
requests (recorded as ``cancelled``), closes its records and reports, and the parent saves a
partial run. A worker that dies without reporting is named in the manifest. A parent that
dies (SIGKILL) takes its workers with it (loadgen/worker_process.py: a parent-death signal
and the closed socket); its run directory is recovered from the workers' files by
``analysis.load.load_run``.

Telemetry: the parent runs the telemetry session; its sampler counts the workers' processes
as the generator's (``gen_*`` columns), and with ``--metrics-port`` the parent serves the
live endpoint, fed by the workers once a second (docs/telemetry.md).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from arrivals.workload import Workload
from loadgen.engine import EngineOptions
from loadgen.manifest import write_json_atomic
from loadgen.merge import generator_section, merge_records, merge_timeseries, timeseries_table
from loadgen.progress import Progress
from loadgen.split import session_ids_of, split_indices, subset_workload
from loadgen.worker import WorkerJob

START_MARGIN_S = 0.2  # t0 = the moment all workers are ready + this
# Auto worker count: the Poisson rate one process sustains with send-lag p99 under 1 ms on a
# 2-vCPU machine against the nginx null server (docs/benchmarks.md), with a margin: 500 req/s
# with aiohttp, 1,500 with the lean HTTP client (2026-12-03), where 2 processes did better
# than 1 from 1,500 req/s on.
RATE_PER_WORKER = 400.0
RATE_PER_WORKER_BY_HTTP_CLIENT = {"lean": 1200.0, "aiohttp": RATE_PER_WORKER}


def rate_per_worker(client: Any) -> float:
    """The auto worker count's rate per process for ``client`` (a ClientConfig or a Client):
    the lean HTTP client's, else aiohttp's (the other clients use aiohttp or gRPC)."""
    return RATE_PER_WORKER_BY_HTTP_CLIENT.get(getattr(client, "http_client", "aiohttp"),
                                              RATE_PER_WORKER)
SPLIT_DOC = ("round-robin by request index (request i -> worker i mod N); every turn of a "
             "session in the worker of its first turn (loadgen/split.py)")


class WorkerError(RuntimeError):
    """A worker could not prepare its share (before t0): the run did not start."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def peak_rate(t_intended: np.ndarray, window_s: float = 1.0) -> float:
    """The most requests intended in any window of ``window_s`` seconds, per second."""
    t = np.asarray(t_intended, dtype=np.float64)
    if not t.size:
        return 0.0
    counts = np.searchsorted(t, t + window_s, side="left") - np.arange(t.size)
    return float(counts.max()) / window_s


def auto_workers(wl: Workload, *, max_concurrency: int | None = None, cores: int | None = None,
                 rate_per_worker: float = RATE_PER_WORKER) -> int:
    """``--workers auto``: 1 process unless the schedule's peak rate (busiest second) needs
    more than ``rate_per_worker`` req/s; then ceil(peak / rate_per_worker), at most one per
    core. Closed-loop runs (``--max-concurrency``) stay in one process, where the limit is
    global. With sessions only first turns have times before the run: their peak rate is
    scaled by the mean number of turns per session."""
    if max_concurrency:
        return 1
    cores = cores or available_cores()
    t = np.asarray(wl.t_intended, dtype=np.float64)
    first = t[np.isfinite(t)]
    peak = peak_rate(first) * (len(t) / first.size if first.size else 0.0)
    return int(min(max(1, math.ceil(peak / rate_per_worker)), cores))


def _share(total: int, workers: int, k: int) -> int:
    """Worker k's part of a limit ``total`` split over ``workers`` (0 stays 0: unlimited)."""
    if not total:
        return 0
    return total // workers + (1 if k < total % workers else 0)


def make_jobs(spec: Any, workers: int, records_dir: Path,
              tokenize_counts: list[int | None] | None = None,
              live_metrics: bool = False) -> list[WorkerJob]:
    """Split ``spec.workload`` (a RunSpec's) into one job per worker; ``tokenize_counts``
    (one per request, --count-tokens-with-server) are split with it; ``live_metrics``: the
    workers queue their finished requests for the parent's live endpoint."""
    wl = spec.workload
    if spec.engine.max_concurrency and spec.engine.max_concurrency < workers:
        raise ValueError(f"--max-concurrency {spec.engine.max_concurrency} is smaller than "
                         f"--workers {workers}: each worker needs at least one slot")
    parts = split_indices(len(wl), workers, session_ids_of(wl))
    jobs = []
    for k, idx in enumerate(parts):
        eng: EngineOptions = replace(
            spec.engine, worker=k,
            max_concurrency=_share(spec.engine.max_concurrency or 0, workers, k) or None,
            connection_limit=_share(spec.engine.connection_limit, workers, k))
        toks = None if tokenize_counts is None else [tokenize_counts[i] for i in idx.tolist()]
        jobs.append(WorkerJob(worker=k, workload=subset_workload(wl, idx), ids=idx,
                              client=spec.client, engine=eng,
                              records_path=records_dir / f"w{k}.parquet",
                              keep_chunk_times=spec.keep_chunk_times,
                              input_tokens_tokenize=toks, live_metrics=live_metrics))
    return jobs


# --------------------------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------------------------

class Stopper:
    """SIGINT/SIGTERM handlers of the parent while workers run: call ``stop_all`` once (tell
    every worker to stop); a second signal only says that it is stopping."""

    def __init__(self, stop_all: Callable[[], None], n: int) -> None:
        self.stop_all, self.n = stop_all, n
        self.by: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Stopper:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.by is not None:
            print(f"\n{name} again: already stopping, workers are saving their records...",
                  file=sys.stderr)
            return
        self.by = name
        print(f"\n{name}: stopping {self.n} workers and saving the partial run...", file=sys.stderr)
        self.stop_all()


def _send_stop(conns: list[Connection]) -> None:
    for c in conns:
        try:
            c.send(("stop",))
        except OSError:
            pass


def run_local(spec: Any, run_dir: Path, manifest: dict[str, Any], workers: int,
              tokenize_counts: list[int | None] | None = None) -> dict[str, Any]:
    """Run ``spec`` with ``workers`` local processes; return the finished manifest."""
    records_dir = run_dir / "workers"
    jobs = make_jobs(spec, workers, records_dir, tokenize_counts, live_metrics=_live_on(spec))
    info = {"mode": "processes", "start_method": "python -m loadgen.worker_process (own "
            "process group, stops when the parent dies; job and messages over a socket)",
            "count": workers, "split": SPLIT_DOC, "start_margin_s": START_MARGIN_S,
            "records": "workers/w<k>.parquet, merged into requests.parquet at the end",
            "t0_agreement": "barrier (every worker prepared), then t0 = now + margin on "
                            "time.perf_counter (CLOCK_MONOTONIC, shared by the machine)"}
    manifest["config"]["workers"] = info  # on disk now: a recovery knows the workers
    write_json_atomic(run_dir / "manifest.json", manifest)
    procs, conns = [], []
    failures: dict[int, str] = {}
    try:
        for _ in jobs:
            p, c = _start_process()
            procs.append(p)
            conns.append(c)
        for k, (job, c) in enumerate(zip(jobs, conns, strict=True)):
            try:
                c.send(job)
            except OSError as e:  # it died before reading its job
                failures[k] = f"worker {k} exited (code {procs[k].poll()}) before its job was sent: {e}"
    except BaseException:
        _reap(procs, kill=True)
        raise
    try:
        tel = _telemetry(spec, run_dir, [p.pid for p in procs])
    except BaseException:
        _reap(procs, kill=True)
        raise
    live_metrics = tel.live if tel is not None else None
    progress = Progress(len(spec.workload), spec.workload.duration,
                        enabled=spec.progress and not spec.quiet)
    reports: dict[int, dict[str, Any]] = {}
    ready: dict[int, float] = {}
    live: dict[int, tuple[int, ...]] = {}
    counts: dict[int, tuple[int, ...]] = {}  # each worker's last counters (kept after "done")
    t0 = t0_unix = math.nan
    by_conn = {c: k for k, c in enumerate(conns)}
    with Stopper(lambda: _send_stop(conns), workers) as stopper:
        try:
            # barrier: every worker prepared (or gone)
            while len(ready) + len(failures) < workers and stopper.by is None:
                _pump(by_conn, procs, ready, live, reports, failures, timeout=0.2)
            if stopper.by is None and not failures:
                t0 = time.perf_counter() + START_MARGIN_S
                t0_unix = time.time() + (t0 - time.perf_counter())
                for c in conns:
                    c.send(("start", t0))
                if tel is not None:
                    tel.send_t0(t0, t0_unix)  # for a recovery of the telemetry after a crash
            else:
                stopper.stop_all()
            last = 0.0
            while len(reports) + len(failures) < workers:
                _pump(by_conn, procs, ready, live, reports, failures, timeout=0.2,
                      counts=counts, live_metrics=live_metrics)
                now = time.perf_counter()
                if live and now - last >= 1.0:
                    last = now
                    progress(_aggregate(live), now - t0)
        finally:
            _reap(procs)
            progress.close()
            if tel is not None:
                tel.stop(keep_live=True)  # the live endpoint serves the totals until the end
    if math.isnan(t0) and stopper.by is None and failures:
        if tel is not None:
            tel.stop()
        first = failures[min(failures)]
        if "\n" in first:
            print(first.split("\n", 1)[1], file=sys.stderr, end="")  # the worker's traceback
        raise WorkerError("; ".join(failures[k].splitlines()[0] for k in sorted(failures)))
    reps = [reports[k] for k in sorted(reports)]
    return finish_workers(spec, run_dir, manifest, jobs, reps, failures, t0, t0_unix,
                          stopper.by, info, tel)


def _pump(by_conn: dict[Connection, int], procs: list, ready: dict, live: dict, reports: dict,
          failures: dict, timeout: float, counts: dict | None = None,
          live_metrics: Any = None) -> None:
    """Handle the messages that arrived within ``timeout``; notice dead workers. Progress
    goes to ``live`` (and ``counts``, which keeps it after "done") and, with a live endpoint,
    the finished requests it carries and the summed counters to ``live_metrics``."""
    for c in wait(list(by_conn), timeout=timeout):
        k = by_conn[c]
        try:
            kind, payload = c.recv()
        except (EOFError, OSError):
            del by_conn[c]
            if k not in reports and k not in failures:
                try:
                    code = procs[k].wait(timeout=2)
                except subprocess.TimeoutExpired:
                    code = None
                failures[k] = f"worker {k} exited (code {code}) without reporting"
            continue
        if kind == "ready":
            ready[k] = payload
        elif kind == "progress":
            live[k] = payload
            if counts is not None:
                counts[k] = payload
            if live_metrics is not None:
                if len(payload) > 6:
                    live_metrics.observe_rows(payload[6])
                live_metrics.engine_result = _aggregate(counts if counts is not None else live)
        elif kind == "done":
            reports[k] = payload
            live.pop(k, None)
        elif kind == "stopped":
            failures[k] = f"worker {k} was stopped before t0"
        elif kind == "error":
            failures[k] = f"worker {k} failed: {payload}"


def _start_process() -> tuple[subprocess.Popen, Connection]:
    """A fresh interpreter running loadgen/worker_process.py, in its own process group, with
    one end of a socket pair; this repository's code first on its path."""
    mine, theirs = socket.socketpair()
    code_root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join([code_root, *filter(None, [os.environ.get("PYTHONPATH")])])
    try:
        p = subprocess.Popen([sys.executable, "-m", "loadgen.worker_process", str(theirs.fileno()),
                          str(os.getpid())],
                             pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                             process_group=0, env={**os.environ, "PYTHONPATH": path})
    finally:
        theirs.close()
    return p, Connection(mine.detach())


def _reap(procs: list[subprocess.Popen], kill: bool = False) -> None:
    """Wait for every worker (10 s), then kill the ones still running."""
    for p in procs:
        if kill and p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def _aggregate(live: dict[int, tuple[int, ...]]) -> SimpleNamespace:
    v = np.sum(np.array([x[:5] for x in live.values()]), axis=0).tolist()
    return SimpleNamespace(counters=SimpleNamespace(started=v[0], sent=v[1], done=v[2],
                                                    failed=v[3], in_flight=v[4]))


def _live_on(spec: Any) -> bool:
    return spec.telemetry is not None and spec.telemetry.metrics_port is not None


def _telemetry(spec: Any, run_dir: Path, worker_pids: list[int] | None = None,
               live: bool = True) -> Any:
    """The run's telemetry session, in the parent (host and server sampling, scraping, the
    live endpoint fed by the workers); ``worker_pids``: local worker processes, sampled as
    part of the generator. ``live=False``: no live endpoint (a runner that cannot feed it)."""
    if spec.telemetry is None:
        return None
    from loadgen.telemetry.session import TelemetrySession

    opts = spec.telemetry
    if opts.metrics_port is not None and not live:
        print("note: --metrics-port (live generator metrics) is not available with this "
              "runner; it is off for this run", file=sys.stderr)
        opts = replace(opts, metrics_port=None)
    return TelemetrySession(opts).start(run_dir, generator_pids=worker_pids or ())


def finish_workers(spec: Any, run_dir: Path, manifest: dict[str, Any], jobs: list[WorkerJob],
                   reports: list[dict[str, Any]], failures: dict[int, str], t0: float,
                   t0_unix: float, interrupted_by: str | None, info: dict[str, Any],
                   tel: Any) -> dict[str, Any]:
    """Merge the workers' outputs into the run directory and fill the manifest (shared by the
    local and the Ray runner); the telemetry session (its live endpoint, kept open until
    now) is stopped whatever happens."""
    try:
        return _finish(spec, run_dir, manifest, jobs, reports, failures, t0, t0_unix,
                       interrupted_by, info, tel)
    finally:
        if tel is not None:
            tel.stop()  # idempotent after tel.finish


def _finish(spec: Any, run_dir: Path, manifest: dict[str, Any], jobs: list[WorkerJob],
            reports: list[dict[str, Any]], failures: dict[int, str], t0: float,
            t0_unix: float, interrupted_by: str | None, info: dict[str, Any],
            tel: Any) -> dict[str, Any]:
    n_rec, unreadable, salvaged = merge_records([Path(j.records_path) for j in jobs],
                                                run_dir / "requests.parquet")
    pq.write_table(timeseries_table(merge_timeseries([r["timeseries"] for r in reports])),
                   run_dir / "timeseries.parquet")
    if not unreadable:
        shutil.rmtree(run_dir / "workers", ignore_errors=True)
    gen = generator_section(reports, t0, n_rec)
    gen["workers_failed"] = {str(k): v for k, v in sorted(failures.items())}
    gen["unreadable_records"] = unreadable
    gen["salvaged_records"] = salvaged
    manifest["config"]["workers"] = info
    write_errors = {r["worker"]: r["write_error"] for r in reports if r.get("write_error")}
    if write_errors and interrupted_by is None:
        from loadgen.run import WRITE_ERROR

        interrupted_by = WRITE_ERROR
    stopped = interrupted_by is not None or any(r["interrupted"] for r in reports)
    manifest["status"] = "partial" if (stopped or failures or unreadable) else "complete"
    manifest["interrupted_by"] = interrupted_by
    problems = [v.splitlines()[0] for v in failures.values()]
    problems += [f"worker {k}: records could not be written ({e}); the records written so far "
                 "are kept" for k, e in sorted(write_errors.items())]
    if problems:
        manifest["failure"] = "; ".join(problems)
    if math.isfinite(t0_unix):
        manifest["clock"]["t0_unix"] = t0_unix
        manifest["clock"]["t0_utc"] = datetime.fromtimestamp(t0_unix, UTC).isoformat()
    if tel is not None and math.isfinite(t0):
        manifest["telemetry"] = tel.finish(run_dir, t0, gen["wall_s"])
    manifest["generator"] = gen
    return manifest
