"""Shared fixtures: real reference servers on 127.0.0.1, started and stopped by the tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from servers.process import ServerProcess, sim_server  # noqa: E402


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator:
    """``start_sim(*flags)`` starts ``python -m servers.sim --port 0 FLAGS`` and returns it;
    every server started is stopped (its process group) at the end of the test."""
    started: list[ServerProcess] = []

    def start(*flags: str) -> ServerProcess:
        srv = sim_server(tmp_path / f"sim{len(started)}.log", *flags).start(timeout_s=30)
        started.append(srv)
        return srv

    yield start
    for s in started:
        s.stop()
