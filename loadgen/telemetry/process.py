"""The sampler and the scraper in a separate process, so they cost the event loop nothing.

Threads in the generator would compete with the event loop for the GIL (and, on a busy
machine, a thread descheduled while holding it stalls the loop for a whole time slice); a
``fork`` of the generator would make its first touch of every page after the fork a
copy-on-write fault, during the run. So ``loadgen run`` starts a fresh interpreter,
``python -m loadgen.telemetry.process``, before t0, in its own session (a terminal's Ctrl-C
does not reach it; the generator decides when it stops), at nice 10 (when the CPUs are
saturated the generator and the server go first; a late sample keeps its true time).
Protocol on its stdin/stdout:

    parent -> child   one JSON line: {"sampler": {...} | null, "scraper": {...} | null,
                                       "gen_pid": PID, "spool_dir": RUN_DIR | null}
                      (the sampler's ``gen_pids``: the generator's worker processes)
    child -> parent   "started\\n"
    parent -> child   "t0 T0 T0_UNIX\\n" (once, at the generator's first progress tick)
    parent -> child   "stop\\n"
    child -> parent   one pickle: {"sampler": Sampler, "scraper": Scraper,
                                     "process_cpu_s": s, "run_cpu_s": s}

With a ``spool_dir`` every sample is also appended to a spool file there as it is taken
(loadgen.telemetry.spool). If stdin closes without "stop" (the generator died: SIGKILL, OOM,
a crash), the child stops sampling and writes telemetry.parquet and server_metrics.parquet
from the spools itself (loadgen.telemetry.recover), then exits.

Both processes read ``time.perf_counter`` = CLOCK_MONOTONIC, which is system-wide on Linux, so
the child's times are on the run's clock.
"""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys
from typing import Any

import orjson


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def child_main() -> None:
    from loadgen.telemetry.sampler import Sampler
    from loadgen.telemetry.scraper import Scraper
    from loadgen.telemetry.spool import SAMPLER_SPOOL, SCRAPER_SPOOL, Spool

    cfg = orjson.loads(sys.stdin.buffer.readline())
    os.nice(10)  # on a saturated machine the generator (and the server) go first
    spool_dir = cfg.get("spool_dir")
    spools = []

    def spool(name: str) -> Spool | None:
        if not spool_dir:
            return None
        spools.append(Spool(os.path.join(spool_dir, name)))
        return spools[-1]

    sampler = Sampler(gen_pid=cfg["gen_pid"], spool=spool(SAMPLER_SPOOL),
                      **cfg["sampler"]).start() if cfg["sampler"] else None
    scraper = Scraper(spool=spool(SCRAPER_SPOOL), **cfg["scraper"]).start() \
        if cfg["scraper"] else None
    out = sys.stdout.buffer
    c_started = _cpu()
    out.write(b"started\n")
    out.flush()
    while True:
        line = sys.stdin.buffer.readline()  # "t0 ...", "stop", or b"" at EOF
        if not line.startswith(b"t0 "):
            break
        _, t0, t0_unix = line.split()
        for sp in spools:
            sp.meta(t0=float(t0), t0_unix=float(t0_unix))
    for part in (sampler, scraper):
        if part is not None:
            part.stop()
            part._thread = None  # unpicklable handles
            part._stop = None  # type: ignore[assignment]
    for sp in spools:
        sp.close()
    if line != b"stop\n":  # the generator is gone: nobody will collect the rows
        if spools:
            from loadgen.telemetry.recover import recover_telemetry

            recover_telemetry(spool_dir, reason="the generator was lost: the telemetry "
                              "process's stdin closed without 'stop'")
        return
    total = _cpu()
    try:
        pickle.dump({"sampler": sampler, "scraper": scraper, "process_cpu_s": total,
                     "run_cpu_s": total - c_started}, out)
        out.flush()
    except (BrokenPipeError, OSError):
        pass


class TelemetryProcess:
    """``start()`` launches the child; ``stop()`` returns (Sampler | None, Scraper | None, info)."""

    def __init__(self, sampler_kw: dict[str, Any] | None, scraper_kw: dict[str, Any] | None,
                 spool_dir: str | None = None):
        self.sampler_kw, self.scraper_kw, self.spool_dir = sampler_kw, scraper_kw, spool_dir
        self.proc: subprocess.Popen | None = None
        self.result: tuple[Any, Any, dict[str, Any]] | None = None

    def start(self, timeout_s: float = 60.0) -> TelemetryProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadgen.telemetry.process"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, start_new_session=True)
        cfg = {"sampler": self.sampler_kw, "scraper": self.scraper_kw, "gen_pid": os.getpid(),
               "spool_dir": self.spool_dir}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(orjson.dumps(cfg) + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()  # before t0: blocking here costs the run nothing
        if line != b"started\n":
            self.proc.kill()
            self.proc.wait(5)
            raise RuntimeError(f"telemetry process did not start (said {line[:200]!r}; "
                               f"exit code {self.proc.returncode})")
        return self

    def send_t0(self, t0: float, t0_unix: float) -> None:
        """Tell the child the run's t0 (it goes into the spools, for a recovery after a
        crash); a few bytes into an empty pipe, so it does not block."""
        p = self.proc
        if p is None or p.stdin is None or p.stdin.closed or self.result is not None:
            return
        try:
            p.stdin.write(f"t0 {t0!r} {t0_unix!r}\n".encode())
            p.stdin.flush()
        except OSError:
            pass  # the child is gone; stop() reports it

    def stop(self, timeout_s: float = 30.0) -> tuple[Any, Any, dict[str, Any]]:
        if self.result is not None:
            return self.result
        p = self.proc
        assert p is not None and p.stdin is not None and p.stdout is not None
        info: dict[str, Any] = {"pid": p.pid}
        sampler = scraper = None
        try:
            p.stdin.write(b"stop\n")
            p.stdin.close()
            msg = pickle.load(p.stdout)
            sampler, scraper = msg["sampler"], msg["scraper"]
            info["process_cpu_s"] = msg["process_cpu_s"]  # including start-up and imports
            info["run_cpu_s"] = msg["run_cpu_s"]  # from "started" to "stop"
        except (EOFError, OSError, pickle.UnpicklingError) as e:
            info["error"] = f"telemetry process lost: {type(e).__name__}: {e}"
        finally:
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            p.stdout.close()
        self.result = (sampler, scraper, info)
        return self.result


if __name__ == "__main__":
    child_main()
