"""The reference simulator as a runtime of the common lifecycle (servers/launch.py)."""

from __future__ import annotations

import sys
from typing import Any

import loadgen
from servers.launch import ServeSettings


class SimRuntime:
    """``python -m servers.sim``; the batch-size axis is its ``--max-batch-size``."""

    name = "sim"

    def command(self, s: ServeSettings, port: int) -> list[str]:
        argv = [sys.executable, "-m", "servers.sim", "--host", s.host, "--port", str(port),
                "--model", self.model_name(s)]
        if s.max_batch_size:
            argv += ["--max-batch-size", str(s.max_batch_size)]
        return argv + list(s.extra_args)

    def env(self, s: ServeSettings) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1"}

    def model_name(self, s: ServeSettings) -> str:
        return s.served_model_name or s.model

    def version(self) -> dict[str, Any]:
        return {"version": loadgen.__version__, "source": "llm-loadgen package version"}
