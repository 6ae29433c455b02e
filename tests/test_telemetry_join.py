"""A real run with all telemetry on: the join sees the sim's queue, the live endpoint answers.

The sim runs with --max-batch-size 2 and 20 ms steps. Burst A (6 requests at t=0) fills the
batch and leaves 4 waiting; burst B (3 requests at t=0.3 s) arrives while A's third pair still
waits, so the last scrape before B's t_sent shows a queue >= 1 and a full batch of 2.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from arrivals.workload import synthetic_workload
from loadgen.clients.openai import ClientConfig
from loadgen.records import COLUMNS
from loadgen.run import RunSpec, execute
from loadgen.telemetry.join import decompose_ttft, state_at
from loadgen.telemetry.session import TelemetryOptions
from servers.process import sim_server

pytestmark = pytest.mark.e2e
N_A, N_B, T_B = 6, 3, 0.3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("join")
    srv = sim_server(tmp / "sim.log", "--max-batch-size", "2", "--step-base-ms", "20",
                     "--eos-prob", "0").start(timeout_s=30)
    port = _free_port()
    bodies: list[str] = []
    stop = threading.Event()

    def poll() -> None:  # a Prometheus server scraping the generator during the run
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                    bodies.append(r.read().decode())
            except OSError:
                pass
            time.sleep(0.05)

    try:
        wl = synthetic_workload(num_requests=N_A + N_B, request_rate=100.0, process="constant",
                                input_len=10, output_len=10, seed=3)
        wl = replace(wl, t_intended=np.array([0.0] * N_A + [T_B] * N_B))
        tel = TelemetryOptions(sample_interval_s=0.1, server_pid=srv.proc.pid,
                               scrape_url=srv.base_url + "/metrics", scrape_interval_s=0.02,
                               metrics_port=port)
        spec = RunSpec(client=ClientConfig(base_url=srv.base_url, model="sim-llm"), workload=wl,
                       result_dir=tmp, run_name="r", progress=False, telemetry=tel)
        th = threading.Thread(target=poll, daemon=True)
        th.start()
        res = execute(spec)
        stop.set()
        th.join(5)
    finally:
        srv.stop()
    return res.run_dir, bodies


def test_late_requests_see_the_queue_and_early_ones_do_not(run):
    run_dir, _ = run
    j = pq.read_table(run_dir / "requests_joined.parquet").to_pydict()
    order = np.argsort(j["request_id"])
    q = np.asarray(j["server_queue_length"])[order]
    running = np.asarray(j["server_running"])[order]
    assert np.all(q[:N_A] == 0)  # the server was idle just before burst A
    assert np.all(q[N_A:] >= 1), q  # burst B arrives behind A's waiting pair
    assert np.all(running[N_A:] == 2)
    age = np.asarray(j["server_scrape_age_s"])
    assert np.all((age >= 0) & (age < 0.5))  # 20 ms scrapes on a busy machine


def test_requests_parquet_keeps_its_schema(run):
    run_dir, _ = run
    assert tuple(pq.read_schema(run_dir / "requests.parquet").names) == COLUMNS


def test_server_tree_and_host_are_sampled_on_the_run_clock(run):
    run_dir, _ = run
    t = pq.read_table(run_dir / "telemetry.parquet")
    ts = t.column("t").to_numpy()
    assert ts[0] < 0.05 and ts[-1] > T_B  # started before t0, ran through the run
    cpu = t.column("server_cpu_s_total").to_numpy()
    assert cpu[-1] > cpu[0]  # the server worked
    m = orjson.loads((run_dir / "manifest.json").read_bytes())
    tel = m["telemetry"]
    assert tel["server_process"]["cmdline"][1:3] == ["-m", "servers.sim"]
    assert tel["sampler"]["thread_cpu_s"] > 0 and tel["overhead"]["fraction_of_one_core"] < 0.5
    # sampler and scraper ran in their own process, whose CPU is measured
    assert tel["process"]["run_cpu_s"] > 0 and tel["process"]["pid"] != os.getpid()
    assert tel["scraper"]["scrapes_ok"] > 10 and tel["scraper"]["scrapes_failed"] == 0
    assert set(tel["files"]) == {"telemetry.parquet", "server_metrics.parquet",
                                 "requests_joined.parquet"}
    assert "cpu" in m["environment"] and "gpu" in m["environment"]


def test_the_live_endpoint_was_scraped_during_the_run(run):
    run_dir, bodies = run
    assert bodies, "the generator's /metrics never answered"

    def value(body: str, name: str) -> float:
        m = re.search(rf"^{re.escape(name)} (\S+)$", body, re.M)
        return float(m.group(1)) if m else float("nan")

    sent = [value(b, "loadgen_requests_sent_total") for b in bodies]
    assert max(sent) >= N_A  # it showed the run progressing
    ttft_count = [value(b, "loadgen_ttft_seconds_count") for b in bodies]
    assert max(ttft_count) >= 1
    assert all(c <= N_A + N_B for c in ttft_count)
    m = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert m["telemetry"]["live_metrics"]["requests_drained"] == N_A + N_B


def test_state_at_takes_the_last_scrape_at_or_before():
    t_s = np.array([0.0, 1.0, 2.0])
    v, ts = state_at(t_s, np.array([5.0, 6.0, 7.0]), np.array([-0.1, 0.0, 1.5, 2.0, 9.0]))
    assert np.isnan(v[0]) and v[1:].tolist() == [5.0, 6.0, 7.0, 7.0]
    assert ts[1:].tolist() == [0.0, 1.0, 2.0, 2.0]


def test_ttft_decomposes_into_lag_queue_prefill_and_transport():
    d = decompose_ttft([0.0], [0.002], [0.100], [0.050], [0.030])
    assert d["ttft_intended"][0] == pytest.approx(0.100)
    assert d["generator_lag"][0] == pytest.approx(0.002)
    assert d["transport"][0] == pytest.approx(0.018)
    total = d["generator_lag"] + d["server_queue"] + d["server_prefill"] + d["transport"]
    assert total[0] == pytest.approx(d["ttft_intended"][0])


def test_join_of_a_run_without_scrapes_says_which_flag(tmp_path: Path):
    from loadgen.telemetry.join import join_requests

    with pytest.raises(FileNotFoundError, match="--scrape-metrics"):
        join_requests(tmp_path)
