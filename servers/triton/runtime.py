"""Triton as a runtime of the common lifecycle (servers/launch.py).

The launched process is ``python -m servers.triton`` (servers/triton/cli.py): it writes the
model repository, runs ``tritonserver`` as its child (same process group: the lifecycle's
group stop ends both, and the Python-backend stubs) and serves the OpenAI gateway on the
lifecycle's port. "Healthy and serving the model" is the gateway's ``/v1/models``, which lists
the model only while Triton reports it ready. The batch-size axis is Triton's dynamic batching
``max_batch_size``. Triton's own HTTP, gRPC and metrics ports are picked here, passed on the
command line, and reported by ``extra_info`` (``info()["triton"]``) for the native clients.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers.launch import ServeSettings, pick_port
from servers.triton.dist import PYTRITON_VERSION, TritonDist, find_triton, server_env
from servers.triton.repository import triton_model_name
from servers.triton.server import TritonPorts


@dataclass
class TritonRuntime:
    batching: str = "dynamic"
    instances: int = 1
    threads: int = 1
    max_queue_delay_us: int = 0
    image_model: bool = False
    triton_model: str | None = None
    dist: TritonDist | None = None  # None: find_triton() (the cached install)
    name: str = "triton"
    _ports: dict[int, TritonPorts] = field(default_factory=dict, repr=False)
    _version: dict[str, Any] | None = field(default=None, repr=False)
    _host: str = field(default="127.0.0.1", repr=False)

    def _dist(self) -> TritonDist:
        d = self.dist or find_triton()
        if d is None:
            raise FileNotFoundError("no Triton server installed: run `loadgen serve triton "
                                    "--install` once (or servers.triton.dist.ensure_triton())")
        return d

    def available(self) -> tuple[bool, str]:
        """Whether a Triton install is here (the experiment matrix asks before starting one;
        ``version()`` can only answer from a running server). Installs nothing."""
        try:
            self._dist()
        except (FileNotFoundError, RuntimeError) as e:
            return False, str(e)
        return True, ""

    def prepare(self) -> None:
        """Install the pinned Triton on first use (about 15 s here); the experiment matrix
        calls this for ``prepare = true`` (servers/registry.py)."""
        from servers.triton.dist import ensure_triton

        self.dist = self.dist or ensure_triton(install=True)

    def ports(self, s: ServeSettings, port: int) -> TritonPorts:
        """Triton's HTTP, gRPC and metrics ports for the gateway on ``port`` (picked once)."""
        self._host = s.host
        if port not in self._ports:
            self._ports[port] = TritonPorts(pick_port(s.host), pick_port(s.host),
                                            pick_port(s.host))
        return self._ports[port]

    def command(self, s: ServeSettings, port: int) -> list[str]:
        if s.tensor_parallel_size not in (None, 1):
            raise ValueError("triton: tensor_parallel_size is not supported by the Python-"
                             "backend model (one instance runs on one device)")
        self._dist()  # fail now, with advice, if Triton is not installed
        p = self.ports(s, port)
        argv = [sys.executable, "-m", "servers.triton", "--hf-model", str(s.model),
                "--served-model-name", self.model_name(s),
                "--triton-model", self.triton_model or triton_model_name(self.model_name(s)),
                "--host", s.host, "--port", str(port),
                "--triton-http-port", str(p.http), "--triton-grpc-port", str(p.grpc),
                "--triton-metrics-port", str(p.metrics),
                "--max-batch-size", str(s.max_batch_size or 4),
                "--instances", str(self.instances), "--batching", self.batching,
                "--threads", str(self.threads),
                "--max-queue-delay-us", str(self.max_queue_delay_us),
                "--startup-timeout", str(s.startup_timeout_s)]
        if self.image_model:
            argv.append("--image-model")
        return argv + list(s.extra_args)

    def env(self, s: ServeSettings) -> dict[str, str]:
        e = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
             "TOKENIZERS_PARALLELISM": "false"}
        try:
            e["LD_LIBRARY_PATH"] = server_env(self._dist())["LD_LIBRARY_PATH"]
        except (FileNotFoundError, RuntimeError):
            pass
        return e

    def model_name(self, s: ServeSettings) -> str:
        return s.served_model_name or Path(s.model).name

    def extra_info(self, s: ServeSettings, port: int) -> dict[str, Any]:
        """Triton's own endpoints (for the native clients) and its model name."""
        p = self.ports(s, port)
        return {"triton": {"http": f"http://{s.host}:{p.http}", "grpc": f"{s.host}:{p.grpc}",
                           "metrics": f"http://{s.host}:{p.metrics}/metrics",
                           "model": self.triton_model or triton_model_name(self.model_name(s)),
                           "image_model": "image_blur" if self.image_model else None}}

    def version(self) -> dict[str, Any]:
        """Triton's server metadata (``GET /v2``) from a running server of this runtime,
        plus the wheel it came from; cached once a server answered."""
        if self._version is not None:
            return self._version
        dist = self.dist or find_triton()
        out: dict[str, Any] = {"nvidia_pytriton": PYTRITON_VERSION,
                               "dist": dist.info() if dist else None}
        for p in self._ports.values():
            try:
                with urllib.request.urlopen(f"http://{self._host}:{p.http}/v2", timeout=5) as r:
                    meta = json.loads(r.read())
            except (urllib.error.URLError, OSError, ValueError):
                continue
            out.update({"version": meta.get("version"), "server": meta.get("name"),
                        "extensions": meta.get("extensions"),
                        "source": "GET /v2 (Triton server metadata)"})
            self._version = out
            return out
        out["unavailable"] = "no running Triton server of this runtime answered GET /v2"
        return out
