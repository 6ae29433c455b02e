"""Starting and stopping a server process that we own.

The server runs in its own process group (so its children die with it), its output goes to a
log file, and it is stopped by signalling that group only: we never touch processes we did not
start. A server that dies or does not become healthy in time raises ``ServerStartError`` with
the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LISTEN_RE = re.compile(rb"listening on (https?://[^\s]+)")


class ServerStartError(RuntimeError):
    """The server did not start; the message quotes its log."""


def _group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` (one we created) still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel for SIGTERM when the parent dies (Linux:
    prctl(PR_SET_PDEATHSIG = 1, SIGTERM)); None elsewhere. libc is loaded here, in the parent,
    so the child between fork and exec only makes the one system call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    sig = int(signal.SIGTERM)

    def hook() -> None:
        prctl(1, sig, 0, 0, 0)

    return hook


@dataclass
class ServerProcess:
    """A started server: its base URL, process and log file."""

    argv: list[str]
    log_path: Path
    base_url: str = ""
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Linux: the kernel sends the server SIGTERM when the process that started it dies, even
    # by SIGKILL (prctl PR_SET_PDEATHSIG), so a killed experiment matrix leaves no server.
    die_with_parent: bool = False

    def start(
        self, timeout_s: float = 60.0, ready: Callable[[], bool] | None = None
    ) -> ServerProcess:
        """Start the process; return once ``ready()`` (default: GET /health is 200) is true.

        The base URL is given, or read from a ``listening on http://...`` line in the log.
        """
        ready = ready or self._healthy
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **self.env},
            preexec_fn=_die_with_parent_hook() if self.die_with_parent else None,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"server exited with code {self.proc.returncode} during start-up: "
                    f"{' '.join(self.argv)}\n--- last lines of {self.log_path} ---\n{log_tail(self.log_path)}"
                )
            if not self.base_url:
                m = LISTEN_RE.search(self.log_path.read_bytes())
                if m:
                    self.base_url = m.group(1).decode().rstrip("/")
            if self.base_url and ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise ServerStartError(
            f"server not healthy after {timeout_s:g} s: {' '.join(self.argv)}\n"
            f"--- last lines of {self.log_path} ---\n{log_tail(self.log_path)}"
        )

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the server's process group, then SIGKILL it if it does not exit in time.

        Returns once the whole group is gone, not only its leader: a server with worker
        processes (vLLM's engine core and workers) may exit before them, and they must not
        outlive the stop (as orphans holding memory or the port).
        """
        p = self.proc
        if p is None:
            return None
        deadline = time.monotonic() + timeout_s
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                return p.poll()
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        while _group_alive(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(p.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            end = time.monotonic() + 5.0  # SIGKILL is not instant; orphans are reaped by init
            while _group_alive(p.pid) and time.monotonic() < end:
                time.sleep(0.05)
        return p.returncode

    def kill(self) -> None:
        """SIGKILL the whole group at once (to simulate a crashed server)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> ServerProcess:
        return self if self.proc else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def sim_server(log_path: Path, *args: str, port: int = 0) -> ServerProcess:
    """The reference simulator as a child process (``python -m servers.sim``)."""
    argv = [sys.executable, "-m", "servers.sim", "--port", str(port), *args]
    return ServerProcess(argv=argv, log_path=log_path, env={"PYTHONUNBUFFERED": "1"})
