"""A `loadgen serve RUNTIME ... --info-json FILE` child process in a test: start it, wait for
the info it writes once its server is healthy, stop it with SIGTERM and check that the server
went with it. Shared by the serve-command tests of llama.cpp, llama-cpp-python and vLLM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def serve_child(*args: str) -> Iterator[subprocess.Popen]:
    """``python -m loadgen ARGS`` with its output kept (stdout and stderr together); killed
    on the way out if a failed assertion left it running."""
    proc = subprocess.Popen([sys.executable, "-m", "loadgen", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_info(proc: subprocess.Popen, info_path: Path, timeout_s: float,
                  poll_s: float = 0.2) -> dict:
    """The ``--info-json`` the child writes when its server is up; fails with the child's
    output if it exits first, or with "timeout" after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not info_path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(poll_s)
    assert info_path.exists(), proc.communicate(timeout=10)[0] if proc.poll() else "timeout"
    return json.loads(info_path.read_text())


def stop_and_check_gone(proc: subprocess.Popen, server_pid: int, timeout_s: float,
                        group: bool = True) -> None:
    """SIGTERM to the child: it exits 0, and the server (its whole process group when
    ``group``) is gone."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=timeout_s) == 0
    with pytest.raises(ProcessLookupError):
        (os.killpg if group else os.kill)(server_pid, 0)
