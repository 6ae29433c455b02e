"""`loadgen run --ray ADDRESS|auto|local`: the workers run as Ray actors on a cluster's nodes.

Ray is the distributed engine: it places the actors (a placement group, SPREAD over nodes),
ships this code to them (``runtime_env`` ``py_modules``: the driver's loadgen, arrivals and
analysis packages; each node needs the dependencies, ``pip install 'llm-loadgen[ray]'``),
carries the calls and brings the results back. No protocol of our own.

1. The schedule is split as for local workers (loadgen/split.py); each actor prepares its
   share's request bodies before t0.
2. Clocks: the driver measures each actor's wall-clock offset (loadgen/distributed/clock.py,
   8 round trips, the shortest kept), picks the common start on its own clock with a margin,
   and sends each actor the start on that actor's clock; the actor converts it to its
   perf_counter and runs the engine from there.
3. Each actor writes its records with a RecordWriter on its node (a temporary file), and
   returns the file's bytes with its report; the driver writes them under the run directory
   and merges them as for local workers (loadgen/workers.py ``finish_workers``).

Ctrl-C on the driver calls every actor's ``stop`` (actors run with two threads, so ``stop``
runs while ``run`` does): each cancels its in-flight requests and returns its partial records.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadgen.distributed.clock import best_offset, start_margin
from loadgen.progress import Progress
from loadgen.worker import PreparedWorker, WorkerJob
from loadgen.workers import (
    SPLIT_DOC,
    Stopper,
    _aggregate,
    _live_on,
    _telemetry,
    finish_workers,
    make_jobs,
)

AUTO = 0  # RunSpec.workers = AUTO with --ray: one worker per alive node
START_FLOOR_S = 1.0  # the least lead time of the common start
CLOCK_ROUNDS = 8
READY_TIMEOUT_S = 120.0


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot give the workers what they need."""


class LoadWorker:
    """One worker's share as a Ray actor (wrapped with ``ray.remote`` in ``run_ray``)."""

    def __init__(self) -> None:
        self.prepared: PreparedWorker | None = None
        self.loop: Any = None
        self.task: Any = None
        self.stopped = False
        self.counters: tuple = ()
        self.tmp: str | None = None

    def where(self) -> dict[str, Any]:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "pid": os.getpid()}

    def clock(self) -> float:
        return time.time()

    def prepare(self, job: WorkerJob) -> float:
        self.tmp = tempfile.mkdtemp(prefix="loadgen-ray-worker-")
        self.prepared = PreparedWorker(replace(job, records_path=Path(self.tmp) / "records.parquet"))
        return self.prepared.prepare_s

    def run(self, start_wall: float) -> dict[str, Any]:
        """Run from ``start_wall`` (this node's wall clock); return the report and records."""
        import asyncio

        import uvloop

        assert self.prepared is not None, "prepare() first"
        t0 = time.perf_counter() + (start_wall - time.time())

        def on_task(task: Any) -> None:
            self.loop, self.task = asyncio.get_running_loop(), task
            if self.stopped:
                task.cancel()

        def progress(res: Any, now: float) -> None:
            c = res.counters
            self.counters = (c.started, c.sent, c.done, c.failed, c.in_flight, now)

        rep = uvloop.run(self.prepared.run(t0, on_progress=progress, on_task=on_task))
        path = Path(self.prepared.job.records_path)
        rep["records"] = path.read_bytes()
        rep["node"] = self.where()
        rep["live_rows"] = self.prepared.take_live()  # those after the driver's last poll
        shutil.rmtree(path.parent, ignore_errors=True)
        return rep

    def progress(self) -> tuple:
        """The last counters (started, sent, done, failed, in flight, t) and, with live
        metrics, the finished requests queued since the last call."""
        rows = self.prepared.take_live() if self.prepared is not None else None
        if rows is None:
            return self.counters
        return (*(self.counters or (0, 0, 0, 0, 0, 0.0)), rows)

    def stop(self) -> None:
        self.stopped = True
        if self.loop is not None and self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)


def _connect(address: str, workers: int) -> tuple[Any, bool]:
    """Import Ray and connect (unless this process already did: then its cluster and its
    runtime environment are used as they are); (ray, whether we connected)."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray, which is not installed: "
                             "pip install 'llm-loadgen[ray]'") from None
    if ray.is_initialized():
        return ray, False
    kw: dict[str, Any] = {}
    if address == "local":  # a cluster of this machine only: as many worker slots as asked
        from loadgen.workers import available_cores

        kw["num_cpus"] = max(available_cores(), workers)
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             runtime_env=_runtime_env(), **kw)
    return ray, True


def _runtime_env() -> dict[str, Any]:
    """Ship the driver's own code to the cluster (job level: Ray uploads these folders)."""
    import analysis
    import arrivals
    import loadgen

    return {"py_modules": [str(Path(m.__file__).parent) for m in (loadgen, arrivals, analysis)]}


def _worker_count(ray: Any, workers: int) -> int:
    if workers != AUTO:
        return workers
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
    return max(1, len(nodes))


def run_ray(spec: Any, run_dir: Path, manifest: dict[str, Any], address: str,
            workers: int, tokenize_counts: list[int | None] | None = None) -> dict[str, Any]:
    """Run ``spec`` on a Ray cluster; return the finished manifest (as ``run_local``)."""
    ray, started_here = _connect(address, workers)
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    n = _worker_count(ray, workers)
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus < n:
        raise RayUnavailable(f"the Ray cluster has {cpus:g} CPUs; {n} workers need one each "
                             "(lower --workers or add nodes)")
    jobs = make_jobs(spec, n, run_dir / "workers", tokenize_counts, live_metrics=_live_on(spec))
    pg = placement_group([{"CPU": 1}] * n, strategy="SPREAD")
    actor_cls = ray.remote(num_cpus=1, max_concurrency=2)(LoadWorker)
    actors: list[Any] = []
    tel = None
    try:
        ray.get(pg.ready(), timeout=READY_TIMEOUT_S)
        actors = [actor_cls.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=k)
        ).remote() for k in range(n)]
        prep = ray.get([a.prepare.remote(j) for a, j in zip(actors, jobs, strict=True)],
                       timeout=READY_TIMEOUT_S)
        nodes = ray.get([a.where.remote() for a in actors])
        clocks = [_measure(ray, a) for a in actors]
        tel = _telemetry(spec, run_dir)
        margin = start_margin([c["rtt_s"] for c in clocks], START_FLOOR_S)
        start_wall = time.time() + margin
        t0 = time.perf_counter() + (start_wall - time.time())  # the driver's t0 (telemetry)
        refs = [a.run.remote(start_wall + c["offset_s"]) for a, c in zip(actors, clocks, strict=True)]
        if tel is not None:
            tel.send_t0(t0, start_wall)
        live = tel.live if tel is not None else None
        reports = _wait(ray, actors, refs, spec, live)
        interrupted = reports.pop("_interrupted_by", None)
    except BaseException:
        if tel is not None:
            tel.stop()
        raise
    finally:
        if tel is not None:
            tel.stop(keep_live=True)  # the live endpoint serves the totals until the end
        for a in actors:
            ray.kill(a)
        remove_placement_group(pg)
        if started_here:
            ray.shutdown()
    reps, failures = [], {}
    for k, (job, rep) in enumerate(zip(jobs, reports["by_worker"], strict=True)):
        if isinstance(rep, str):
            failures[k] = rep
            continue
        rows = rep.pop("live_rows", None)
        if live is not None:
            live.observe_rows(rows or [])
            c = rep["counters"]
            reports["counts"][k] = (c["started"], c["sent"], c["done"], c["failed"], 0)
            live.engine_result = _aggregate(reports["counts"])
        Path(job.records_path).parent.mkdir(parents=True, exist_ok=True)
        Path(job.records_path).write_bytes(rep.pop("records"))
        rep["clock"] = dict(clocks[k])
        rep["same_clock"] = False
        rep["prepare_s"] = prep[k]
        reps.append(rep)
    info = {"mode": "ray", "address": address, "count": n, "split": SPLIT_DOC,
            "nodes": sorted({w["node_id"] for w in nodes}),
            "placement": "placement group, one CPU per worker, strategy SPREAD",
            "start_margin_s": margin,
            "t0_agreement": "per-worker wall-clock offset to the driver (best of "
                            f"{CLOCK_ROUNDS} round trips), common start = driver now + margin, "
                            "converted by each worker to its perf_counter",
            "per_worker_clock": [{"worker": k, **c, "node": nodes[k]} for k, c in enumerate(clocks)]}
    return finish_workers(spec, run_dir, manifest, jobs, reps, failures, t0, start_wall,
                          interrupted, info, tel)


def _measure(ray: Any, actor: Any) -> dict[str, float]:
    samples = []
    for _ in range(CLOCK_ROUNDS):
        ta = time.time()
        tw = ray.get(actor.clock.remote())
        tb = time.time()
        samples.append((ta, tw, tb))
    return best_offset(samples)


def _wait(ray: Any, actors: list[Any], refs: list[Any], spec: Any,
          live: Any = None) -> dict[str, Any]:
    """Wait for every actor's report, showing progress (and feeding the ``live`` endpoint
    once a second); Ctrl-C stops them all."""
    progress = Progress(len(spec.workload), spec.workload.duration,
                        enabled=spec.progress and not spec.quiet)
    t_start = time.perf_counter()
    pending = list(refs)
    counts: dict[int, tuple] = {}
    with Stopper(lambda: [a.stop.remote() for a in actors], len(actors)) as stopper:
        try:
            while pending:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
                if pending and (progress.enabled or live is not None):
                    try:
                        got = ray.get([a.progress.remote() for a in actors], timeout=2.0)
                    except ray.exceptions.GetTimeoutError:
                        got = []
                    for k, c in enumerate(got):
                        if c:
                            counts[k] = c
                        if live is not None and len(c) > 6:
                            live.observe_rows(c[6])
                    if counts:
                        agg = _aggregate(counts)
                        if live is not None:
                            live.engine_result = agg
                        progress(agg, time.perf_counter() - t_start)
        finally:
            progress.close()
    out: list[Any] = []
    for k, r in enumerate(refs):
        try:
            out.append(ray.get(r))
        except Exception as e:  # an actor died or raised: named in the manifest
            out.append(f"worker {k} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return {"by_worker": out, "_interrupted_by": stopper.by, "counts": counts}
