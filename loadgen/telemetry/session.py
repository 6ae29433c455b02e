"""Telemetry around one run: start the sampler, scraper (one child process) and the live
endpoint (threads here); write their files.

``loadgen.run`` creates a ``TelemetrySession`` when ``RunSpec.telemetry`` is set (the CLI sets
it from the flags in docs/telemetry.md), wraps the record writer and the progress callback,
and calls ``finish`` with the engine's t0 once the records are closed. With worker processes
(loadgen/workers.py) the session runs in the parent: ``start(generator_pids=...)`` makes the
sampler count the workers as part of the generator, ``send_t0`` replaces the progress hook,
and the workers feed the live endpoint (``live.observe_rows``, ``live.engine_result``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq

from loadgen.telemetry.live import LiveMetrics, ObservingWriter
from loadgen.telemetry.process import TelemetryProcess
from loadgen.telemetry.sampler import Sampler
from loadgen.telemetry.scraper import Scraper
from loadgen.telemetry.spool import SAMPLER_SPOOL, SCRAPER_SPOOL

CLOCK = ("time.perf_counter (CLOCK_MONOTONIC), the clock of requests.parquet; "
         "t = seconds from the run's t0 (manifest.clock.t0_unix is t0's wall-clock time)")


@dataclass(frozen=True)
class TelemetryOptions:
    sample: bool = True
    sample_interval_s: float = 1.0
    server_pid: int | None = None
    gpus: bool = True
    scrape_url: str | None = None  # full URL of the server's /metrics
    scrape_interval_s: float = 1.0
    metrics_port: int | None = None  # 0: any free port
    metrics_host: str = "127.0.0.1"
    join: bool = True  # write requests_joined.parquet when scraping


def server_process(pid: int) -> dict[str, Any]:
    """What the OS says about the server process: command line (its flags), executable."""
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            return {"pid": pid, "cmdline": p.cmdline(), "exe": p.exe(), "name": p.name(),
                    "source": "psutil.Process (/proc/PID/cmdline, exe)"}
    except psutil.Error as e:
        return {"pid": pid, "unavailable": f"psutil could not read pid {pid}: {e}"}


class TelemetrySession:
    def __init__(self, opts: TelemetryOptions) -> None:
        self.opts = opts
        self.sampler: Sampler | None = None
        self.scraper: Scraper | None = None
        self.live: LiveMetrics | None = None
        self.child: TelemetryProcess | None = None
        self.child_info: dict[str, Any] = {}
        self.run_dir: Path | None = None

    def start(self, run_dir: Path | None = None,
              generator_pids: Sequence[int] = ()) -> TelemetrySession:
        """Start the telemetry process (and the live endpoint). With ``run_dir`` the samples
        are also spooled there as they are taken, so they survive a crash of the generator.
        ``generator_pids``: the generator's other processes (local workers), sampled with
        this one as the generator (``gen_*`` columns)."""
        o = self.opts
        self.run_dir = Path(run_dir) if run_dir is not None else None
        try:
            if o.sample or o.scrape_url:  # both in one child process (process.py)
                self.child = TelemetryProcess(
                    {"interval_s": o.sample_interval_s, "server_pid": o.server_pid,
                     "gpus": o.gpus, "gen_pids": list(generator_pids)} if o.sample else None,
                    {"url": o.scrape_url, "interval_s": o.scrape_interval_s}
                    if o.scrape_url else None,
                    spool_dir=str(self.run_dir) if self.run_dir is not None else None).start()
            if o.metrics_port is not None:
                self.live = LiveMetrics(o.metrics_port, o.metrics_host)
        except BaseException:
            self.stop()
            raise
        return self

    def wrap_writer(self, writer: Any) -> Any:
        return ObservingWriter(writer, self.live) if self.live else writer

    def wrap_progress(self, cb: Callable[[Any, float], None]) -> Callable[[Any, float], None]:
        """The engine's progress callback (once a second): feeds the live endpoint and, on
        its first call, tells the telemetry process the run's t0 (for crash recovery)."""
        if self.live is None and self.child is None:
            return cb
        live, child = self.live, self.child
        sent = [child is None]

        def progress(res: Any, now: float) -> None:
            if not sent[0]:
                sent[0] = True
                child.send_t0(res.t0, res.t0_unix)
            if live is not None:
                live.engine_result = res
            cb(res, now)

        return progress

    def send_t0(self, t0: float, t0_unix: float) -> None:
        """Tell the telemetry process the run's t0 (what ``wrap_progress`` does in one
        process), so that a recovery after a crash aligns its samples with the records."""
        if self.child is not None:
            self.child.send_t0(t0, t0_unix)

    def stop(self, keep_live: bool = False) -> None:
        """Stop sampling and scraping; the live endpoint too, unless ``keep_live`` (it then
        serves the run's final figures until ``finish``)."""
        if self.child is not None and self.child.result is None:
            self.sampler, self.scraper, self.child_info = self.child.stop()
        if self.live is not None and not keep_live:
            self.live.close()

    def finish(self, run_dir: Path, t0: float, wall_s: float | None = None) -> dict[str, Any]:
        """Stop everything, write the files, return the manifest's ``telemetry`` section."""
        self.stop()
        out: dict[str, Any] = {"options": asdict(self.opts), "clock": CLOCK, "files": {}}
        if self.opts.server_pid is not None:
            out["server_process"] = server_process(self.opts.server_pid)
        if self.child is not None:
            out["process"] = self.child_info
        if self.sampler is not None:
            pq.write_table(self.sampler.table(t0), run_dir / "telemetry.parquet")
            out["files"]["telemetry.parquet"] = "resource samples (docs/telemetry.md)"
            out["sampler"] = self.sampler.summary()
        if self.scraper is not None:
            pq.write_table(self.scraper.table(t0), run_dir / "server_metrics.parquet")
            out["files"]["server_metrics.parquet"] = "server /metrics, long format"
            out["scraper"] = self.scraper.summary()
        spools = [run_dir / n for n in (SAMPLER_SPOOL, SCRAPER_SPOOL)]
        if self.child is not None and self.sampler is None and self.scraper is None \
                and any(p.exists() for p in spools):
            # the telemetry process was lost before it handed its rows over: the spools have them
            from loadgen.telemetry.recover import recover_telemetry

            rec = recover_telemetry(run_dir, t0, reason="the telemetry process was lost",
                                    update_manifest=False)
            out["recovered"] = rec
            out["files"].update({k: v["content"] for k, v in rec["files"].items()})
        for p in spools:
            p.unlink(missing_ok=True)  # the Parquet files hold the same rows now
        if self.scraper is not None and self.opts.join and self.scraper.n_ok:
            from loadgen.telemetry.join import join_requests

            _, info = join_requests(run_dir)
            out["files"]["requests_joined.parquet"] = "per-request server state at t_sent"
            out["join"] = info
        if self.live is not None:
            out["live_metrics"] = self.live.summary()
        child = self.child_info.get("run_cpu_s") or 0.0
        drain = self.live.drain_cpu_s if self.live else 0.0
        out["overhead"] = {
            "telemetry_process_cpu_s": child,  # sampler + scraper during the run (not start-up),
            # not part of generator.cpu_s
            "live_drain_cpu_s": drain,  # a thread in the generator, inside generator.cpu_s
            "fraction_of_one_core": (child + drain) / wall_s if wall_s else None}
        return out
