"""``python -m servers.sim`` as a real process: listening line, serving, clean exit."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_module_prints_real_port_serves_and_exits_0_on_signal(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "servers.sim", "--port", "0", "--model", "m1",
         "--step-base-ms", "1", "--max-batch-size", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the server printed nothing within 20 s"
        line = proc.stdout.readline()
        match = re.fullmatch(r"sim server listening on http://127\.0\.0\.1:(\d+) \(model m1\)\n",
                             line)
        assert match, line
        port = int(match.group(1))
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as resp:
            version = json.load(resp)
        assert version["costs"]["step_base"] == pytest.approx(0.001)
        assert version["max_batch"] == 2
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_flag_exits_2_naming_the_field() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "servers.sim", "--eos-prob", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert "eos_prob" in proc.stderr
