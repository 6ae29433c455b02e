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
                                       "gen_pid": PID}
    child -> parent   "started\\n"
    parent -> child   "stop\\n" (or EOF: the generator died)
    child -> parent   one pickle: {"sampler": Sampler, "scraper": Scraper,
                                     "process_cpu_s": s, "run_cpu_s": s}

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

    cfg = orjson.loads(sys.stdin.buffer.readline())
    os.nice(10)  # on a saturated machine the generator (and the server) go first
    sampler = Sampler(gen_pid=cfg["gen_pid"], **cfg["sampler"]).start() if cfg["sampler"] \
        else None
    scraper = Scraper(**cfg["scraper"]).start() if cfg["scraper"] else None
    out = sys.stdout.buffer
    c_started = _cpu()
    out.write(b"started\n")
    out.flush()
    sys.stdin.buffer.readline()  # "stop", or b"" at EOF
    for part in (sampler, scraper):
        if part is not None:
            part.stop()
            part._thread = None  # unpicklable handles
            part._stop = None  # type: ignore[assignment]
    total = _cpu()
    try:
        pickle.dump({"sampler": sampler, "scraper": scraper, "process_cpu_s": total,
                     "run_cpu_s": total - c_started}, out)
        out.flush()
    except (BrokenPipeError, OSError):
        pass


class TelemetryProcess:
    """``start()`` launches the child; ``stop()`` returns (Sampler | None, Scraper | None, info)."""

    def __init__(self, sampler_kw: dict[str, Any] | None, scraper_kw: dict[str, Any] | None):
        self.sampler_kw, self.scraper_kw = sampler_kw, scraper_kw
        self.proc: subprocess.Popen | None = None
        self.result: tuple[Any, Any, dict[str, Any]] | None = None

    def start(self, timeout_s: float = 60.0) -> TelemetryProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadgen.telemetry.process"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, start_new_session=True)
        cfg = {"sampler": self.sampler_kw, "scraper": self.scraper_kw, "gen_pid": os.getpid()}
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
