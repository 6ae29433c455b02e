"""One lifecycle for every runtime: start, wait until healthy AND serving the model, describe, stop.

A runtime (``servers/<name>/runtime.py``) only says how to build its command line, its
environment and its version; everything else is here, the same for all of them:

- a free loopback port unless one is given (``pick_port``),
- the server in its own process group, its output in a log file (``servers.process``),
- healthy = ``GET /v1/models`` answers 200 and lists the expected model name (another process
  may already answer on a port; a bare /health is not proof it is *our* server),
- ``info()``: runtime, version, full command line, settings and environment overrides, for
  the run manifest,
- stopped (the whole process group) on exit, error or Ctrl-C; a server that fails to start
  raises ``ServerStartError`` quoting the tail of its log,
- optionally run under a profiler (``ServeSettings.profile``: ``perf`` or ``nsys``, via
  ``loadgen.telemetry.profiling.wrap_profiler``); ``info()`` then names the profile directory
  and the files in it (written when the server stops; ``stop()`` then writes
  ``profile.json`` there, which marks the profile complete). A missing profiler raises
  ``ProfilerUnavailable`` before anything starts.

The batch-size axis maps to each runtime's own knob (table in docs/servers.md).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from servers.process import ServerProcess, ServerStartError, log_tail


@dataclass(frozen=True)
class ServeSettings:
    """What the user asked for, in runtime-neutral terms."""

    model: str
    max_batch_size: int | None = None
    tensor_parallel_size: int | None = None
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    served_model_name: str | None = None  # name clients must send; default: runtime decides
    extra_args: tuple[str, ...] = ()  # passed through verbatim after the runtime's own flags
    log_dir: Path = Path("results/servers")
    startup_timeout_s: float = 300.0
    profile: str | None = None  # "perf" | "nsys": run the server under this profiler
    profile_dir: Path | None = None  # default: LOG_DIR/<runtime>-<port>-<profiler>/
    die_with_parent: bool = False  # SIGTERM the server when its parent dies (servers/process.py)


class Runtime(Protocol):
    """How one runtime is started. Implementations are small and pure (no processes)."""

    name: str

    def command(self, s: ServeSettings, port: int) -> list[str]:
        """The argv (a list, never a shell string) that serves ``s`` on ``port``."""
        ...

    def env(self, s: ServeSettings) -> dict[str, str]:
        """Environment variables to add for the server process."""
        ...

    def model_name(self, s: ServeSettings) -> str:
        """The model id the server will list in /v1/models."""
        ...

    def version(self) -> dict[str, Any]:
        """The runtime's version, and how it was obtained (or {"unavailable": reason})."""
        ...


def pick_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def serves_model(base_url: str, model: str, timeout_s: float = 2.0) -> tuple[bool, str]:
    """(True, "") if GET /v1/models lists ``model``; else (False, what was seen)."""
    try:
        with urllib.request.urlopen(base_url + "/v1/models", timeout=timeout_s) as r:
            body = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        return False, f"{type(e).__name__}: {e}"
    ids = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
    return (model in ids), f"serves {ids}"


@dataclass
class RunningServer:
    runtime: Runtime
    settings: ServeSettings
    process: ServerProcess
    base_url: str
    model: str
    started_s: float = 0.0
    extra_info: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """Everything a run manifest needs to say which server produced the numbers."""
        s = asdict(self.settings)
        s["log_dir"] = str(s["log_dir"])
        s["profile_dir"] = str(s["profile_dir"]) if s["profile_dir"] else None
        extra = dict(self.extra_info)
        if "profile" in extra:  # the files appear when the profiler writes them (at stop)
            from loadgen.telemetry.profiling import DONE_FILE, read_done

            d = Path(extra["profile"]["dir"])
            done = read_done(d)
            extra["profile"] = {**extra["profile"], "files": sorted(
                str(f) for f in d.iterdir() if f.is_file() and f.name != DONE_FILE)
                if d.is_dir() else [], "complete": bool(done and done["complete"])}
        return {
            "runtime": self.runtime.name,
            "version": self.runtime.version(),
            "argv": list(self.process.argv),
            "env": self.runtime.env(self.settings),
            "settings": s,
            "base_url": self.base_url,
            "model": self.model,
            "pid": self.process.proc.pid if self.process.proc else None,
            "startup_s": self.started_s,
            "log": str(self.process.log_path),
            **extra,
        }

    def stop(self) -> int | None:
        """Stop the server; a profiled one gets longer to exit (the profiler writes its file
        then) and its profile directory gets ``profile.json`` (loadgen.telemetry.profiling)."""
        prof = self.extra_info.get("profile")
        if prof is None:
            return self.process.stop()
        from loadgen.telemetry.profiling import STOP_TIMEOUT_S, read_done, write_done

        running = self.process.proc is not None and self.process.proc.poll() is None
        rc = self.process.stop(timeout_s=STOP_TIMEOUT_S)
        if running or read_done(prof["dir"]) is None:  # once per server start
            write_done(prof["dir"], prof["tool"], prof["started_unix"], rc,
                       prof["server_argv"], str(self.process.log_path.resolve()))
        return rc

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch(runtime: Runtime, s: ServeSettings) -> RunningServer:
    """Start ``runtime`` with settings ``s`` and return once it serves the model."""
    port = s.port or pick_port(s.host)
    argv = runtime.command(s, port)
    extra: dict[str, Any] = {}
    if s.profile:
        from loadgen.telemetry.profiling import OUTPUT_FILES, clear_done, wrap_profiler

        pdir = Path(s.profile_dir or Path(s.log_dir) / f"{runtime.name}-{port}-{s.profile}")
        server_argv = list(argv)
        argv = wrap_profiler(argv, s.profile, pdir)
        clear_done(pdir)
        extra["profile"] = {"tool": s.profile, "dir": str(pdir.resolve()),
                            "server_argv": server_argv,
                            "output_files": list(OUTPUT_FILES[s.profile]),
                            "started_unix": time.time(),
                            "written": "when the server stops (profile.json then lists the "
                                       "files); `loadgen profile attach RUN_DIR` hard-links "
                                       "(or copies) them into a run directory"}
    base_url = f"http://{s.host}:{port}"
    log = Path(s.log_dir) / f"{runtime.name}-{port}.log"
    proc = ServerProcess(argv=argv, log_path=log, base_url=base_url, env=runtime.env(s),
                         die_with_parent=s.die_with_parent)
    model = runtime.model_name(s)
    t = time.monotonic()
    proc.start(timeout_s=s.startup_timeout_s, ready=lambda: serves_model(base_url, model)[0])
    deadline = t + s.startup_timeout_s
    ok, seen = serves_model(base_url, model)
    while not ok and time.monotonic() < deadline:
        time.sleep(0.2)
        ok, seen = serves_model(base_url, model)
    if not ok:
        proc.stop()
        raise ServerStartError(
            f"{runtime.name} answered at {base_url} but does not serve model {model!r} ({seen});"
            f" another process may own port {port}.\n--- last lines of {log} ---\n{log_tail(log)}"
        )
    extra_fn = getattr(runtime, "extra_info", None)  # optional: e.g. Triton's native ports
    if extra_fn is not None:
        extra.update(extra_fn(s, port))
    return RunningServer(runtime, s, proc, base_url, model, started_s=time.monotonic() - t,
                         extra_info=extra)
