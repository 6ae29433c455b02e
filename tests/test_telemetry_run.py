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
        # t0 reaches the telemetry spool at the first progress tick (~1 s into the run): a
        # fixed sleep after the manifest appears is too short when the telemetry process's
        # start-up (a fresh interpreter, before t0) is slow on a busy machine
        while "t0" not in _spool_meta(tmp_path / "r" / "telemetry.spool.jsonl"):
            assert time.monotonic() < deadline and p.poll() is None, "the run did not start"
            time.sleep(0.05)
        time.sleep(0.5)
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
    assert not list(d.glob("*.spool.jsonl"))  # the Parquet files replaced the spools


def _spool_meta(path) -> dict:
    from loadgen.telemetry.spool import read_spool

    return read_spool(path)[1] if path.exists() else {}


def test_a_sigkilled_generator_keeps_its_telemetry_up_to_the_kill(start_sim, tmp_path):
    import psutil

    srv = start_sim("--step-base-ms", "5")
    d = tmp_path / "r"
    p = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "run", "--base-url", srv.base_url, "--model", "sim-llm",
         "--num-prompts", "400", "--request-rate", "20", "--random-input-len", "10",
         "--random-output-len", "10", "--result-dir", str(tmp_path), "--run-name", "r",
         "--no-progress", "--scrape-metrics", "--scrape-interval", "0.1",
         "--telemetry-interval", "0.1", "--server-pid", str(srv.proc.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    child = None
    try:
        deadline = time.monotonic() + 40
        meta: dict = {}
        while "t0" not in meta:  # the generator told its telemetry process t0 (first tick)
            assert time.monotonic() < deadline and p.poll() is None, "the run did not start"
            time.sleep(0.1)
            meta = _spool_meta(d / "telemetry.spool.jsonl")
        child = meta["pid"]
        time.sleep(1.0)
        t_kill = time.perf_counter()
        p.kill()  # SIGKILL: no handler, no finally, no footer
        p.wait(10)
        deadline = time.monotonic() + 30
        while not (d / "server_metrics.parquet").exists() or (d / "telemetry.spool.jsonl").exists():
            assert time.monotonic() < deadline, "the telemetry process did not write its files"
            time.sleep(0.1)
        try:  # it exits once its files are written (a zombie until someone reaps it)
            psutil.Process(child).wait(10)
        except psutil.NoSuchProcess:
            pass
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    t = pq.read_table(d / "telemetry.parquet")
    ts = t.column("t").to_numpy()
    # on the run's clock (t0 came with the spool), sampled every 0.1 s up to the kill
    assert ts[0] < 0.1 and t.num_rows >= 15
    assert abs(ts[-1] - (t_kill - meta["t0"])) < 0.5
    assert {"gen_cpu_s_total", "server_cpu_s_total", "host_cpu_busy"} <= set(t.column_names)
    sm = pq.read_table(d / "server_metrics.parquet")
    assert "sim:num_requests_running" in set(sm.column("metric").to_pylist())
    assert sm.column("t").to_numpy().max() == pytest.approx(ts[-1], abs=0.5)
    m = orjson.loads((d / "manifest.json").read_bytes())
    assert m["status"] == "running"  # the generator never got to say otherwise
    rec = m["telemetry"]["recovered"]
    assert "generator was lost" in rec["reason"]
    assert rec["files"]["telemetry.parquet"]["t_origin"] == "t0 (sent by the generator)"
    assert rec["files"]["telemetry.parquet"]["rows"] == t.num_rows
    assert not (d / "server_metrics.spool.jsonl").exists()
