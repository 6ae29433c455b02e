"""The PyTorch server as a runtime of the common lifecycle (servers/launch.py)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from servers.launch import ServeSettings


@dataclass(frozen=True)
class PytorchRuntime:
    """``python -m servers.pytorch``; the batch-size axis is its ``--max-batch-size``.

    ``batching`` and ``threads`` are always written on the command line, so the manifest's
    argv says how the server batched and how many threads it had.
    """

    batching: str = "continuous"
    threads: int | None = None  # None: the server's default (half the CPUs)
    name: str = "pytorch"

    def command(self, s: ServeSettings, port: int) -> list[str]:
        from servers.pytorch.cli import default_threads

        argv = [sys.executable, "-m", "servers.pytorch", "--host", s.host, "--port", str(port),
                "--model", s.model, "--served-model-name", self.model_name(s),
                "--batching", self.batching,
                "--threads", str(self.threads or default_threads())]
        if s.max_batch_size:
            argv += ["--max-batch-size", str(s.max_batch_size)]
        if s.tensor_parallel_size not in (None, 1):
            raise ValueError(f"the pytorch runtime runs on one device; tensor_parallel_size "
                             f"must be 1 or unset, got {s.tensor_parallel_size}")
        return argv + list(s.extra_args)

    def env(self, s: ServeSettings) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"}

    def model_name(self, s: ServeSettings) -> str:
        return s.served_model_name or s.model

    def version(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": "importlib.metadata of the launching Python "
                               "(the server runs on the same interpreter)"}
        for dist in ("torch", "transformers", "tokenizers"):
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                out[dist] = None
        if out["torch"] is None:
            return {"unavailable": "torch is not installed (pip install 'llm-loadgen[torch]')", **out}
        out["version"] = f"torch {out['torch']}, transformers {out['transformers']}"
        return out
