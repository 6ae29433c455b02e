"""``tritonserver``'s command line, and running it as a child of the gateway process.

``tritonserver_argv`` is pure. ``TritonChild`` starts the server (in the caller's process
group, so the launcher's group stop reaches it and its Python-backend stubs), waits until the
server and a model are ready, and stops it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from servers.triton.dist import TritonDist, server_env

EXIT_TIMEOUT_S = 5  # --exit-timeout-secs: how long tritonserver waits for in-flight requests


@dataclass(frozen=True)
class TritonPorts:
    http: int
    grpc: int
    metrics: int


def tritonserver_argv(dist: TritonDist, repository: Path, host: str, ports: TritonPorts,
                      extra: tuple[str, ...] = ()) -> list[str]:
    """The argv of ``tritonserver`` serving ``repository`` on loopback ``ports``."""
    return [str(dist.binary), "--model-repository", str(repository),
            "--backend-directory", str(dist.backend_dir),
            "--http-address", host, "--http-port", str(ports.http),
            "--grpc-address", host, "--grpc-port", str(ports.grpc),
            "--metrics-address", host, "--metrics-port", str(ports.metrics),
            "--allow-metrics", "true", "--allow-gpu-metrics", "false",
            "--exit-timeout-secs", str(EXIT_TIMEOUT_S), "--log-info", "true", *extra]


class TritonChild:
    """A running ``tritonserver``; its output goes to our stdout (the server log)."""

    def __init__(self, argv: list[str], env: dict[str, str], http_url: str) -> None:
        self.argv = argv
        self.http_url = http_url
        self.proc = subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL)

    @classmethod
    def start(cls, dist: TritonDist, repository: Path, host: str, ports: TritonPorts,
              extra: tuple[str, ...] = ()) -> TritonChild:
        return cls(tritonserver_argv(dist, repository, host, ports, extra), server_env(dist),
                   f"http://{host}:{ports.http}")

    def _ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, models: list[str], timeout_s: float) -> None:
        """Return once the server and every model in ``models`` are ready; raise
        RuntimeError if the server exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.proc.returncode} "
                                   "while loading its models (see its log above)")
            if self._ok("/v2/health/ready") and all(self._ok(f"/v2/models/{m}/ready")
                                                    for m in models):
                return
            time.sleep(0.2)
        raise RuntimeError(f"tritonserver at {self.http_url} did not have models {models} "
                           f"ready within {timeout_s:g} s")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after the server's own exit timeout and a margin."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(EXIT_TIMEOUT_S + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
