"""`loadgen run` with telemetry flags, interrupted by Ctrl-C: the partial run keeps its series."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.e2e


def test_ctrl_c_to_the_process_group_still_writes_telemetry(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "5")
    p = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "run", "--base-url", srv.base_url, "--model", "sim-llm",
         "--num-prompts", "200", "--request-rate", "20", "--random-input-len", "10",
         "--random-output-len", "10", "--result-dir", str(tmp_path), "--run-name", "r",
         "--no-progress", "--scrape-metrics", "--scrape-interval", "0.2",
         "--telemetry-interval", "0.2", "--server-pid", str(srv.proc.pid)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "r" / "manifest.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)
        os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: every process of the group
        p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
    assert p.returncode == 130
    d = tmp_path / "r"
    m = orjson.loads((d / "manifest.json").read_bytes())
    assert m["status"] == "partial"
    t = pq.read_table(d / "telemetry.parquet")
    assert t.num_rows >= 5 and t.column("t").to_numpy()[-1] > 1.0
    assert "server_cpu_s_total" in t.column_names
    assert pq.read_table(d / "server_metrics.parquet").num_rows > 0
    assert m["telemetry"]["process"]["process_cpu_s"] > 0
    assert m["telemetry"]["options"]["scrape_url"] == srv.base_url + "/metrics"
