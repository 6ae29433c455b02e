"""Every fault we can make on one machine, against real servers on 127.0.0.1 (issue 8).

For each fault: the record's status and error say what happened; in-flight requests are
bounded by the timeout; the schedule keeps going (send lag stays small); the summary's error
table counts the failures; none of them enter latency statistics. Faults come from the
reference server (``--fault-kind``) or from the fault proxy (servers/faultproxy) in front of
it. The faults already covered in test_e2e_engine.py (http500, http429, malformed, reset and
stall of the sim, a server killed for good) are not repeated here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from analysis.load import load_run
from analysis.metrics import col
from arrivals.workload import Workload, synthetic_workload
from loadgen.clients.openai import ClientConfig
from loadgen.run import RunSpec, execute
from servers.process import sim_server

pytestmark = pytest.mark.e2e

# The schedule is held if no request waits for a fault: every fault here lasts 0.5 s or more,
# so a send lag p99 under 50 ms proves it. (loadgen's validity threshold is 5 ms; a CPU shared
# with other jobs crosses that on its own: seen 7-15 ms here with a compile running alongside.
# tests/test_e2e_engine.py holds the 5 ms line on a stalled server.)
LAG_P99_MS = 50.0
GIANT_LAG_MS = 100.0  # with giant responses (see the test)


@pytest.fixture(params=["aiohttp", "lean"])
def http_client(request) -> str:
    """Each fault below is checked with both HTTP clients (``--http-client``): the same
    failure must give the same status and cause."""
    return request.param


def _run(url: str, wl: Workload, tmp: Path, name: str, *, preflight: bool = True,
         **client) -> tuple[dict, object]:
    cfg = ClientConfig(base_url=url, model="sim-llm", **client)
    res = execute(RunSpec(client=cfg, workload=wl, result_dir=tmp, run_name=name,
                          progress=False, do_preflight=preflight))
    return res.summary, load_run(res.run_dir)


def _check_common(s: dict, n: int, failed_status: str, min_failed: int,
                  lag_ms: float = LAG_P99_MS) -> dict:
    """What every fault must keep: all recorded, failures counted by cause, out of latency,
    and the schedule held."""
    by = s["counts"]["by_status"]
    assert sum(by.values()) == n
    assert by.get(failed_status, 0) >= min_failed, by
    assert s["latency_ms"]["from_sent"]["e2e"]["count"] == by.get("ok", 0)
    assert s["latency_ms"]["from_intended"]["ttft"]["count"] == by.get("ok", 0)
    table = {(r["status"], r["cause"]): r["count"] for r in s["errors"]["by_cause"]}
    assert sum(table.values()) == n - by.get("ok", 0)
    assert s["self_check"]["send_lag_ms"]["p99"] < lag_ms
    assert s["counts"]["sent"] == n  # every request went out
    return table


# -- faults of the reference server --------------------------------------------------------

def test_http_503_with_retry_after_is_an_http_error(start_sim, tmp_path, http_client):
    srv = start_sim("--fault-rate", "0.5", "--fault-kind", "http503", "--step-base-ms", "2")
    wl = synthetic_workload(num_requests=30, request_rate=30.0, input_len=10, output_len=8, seed=3)
    s, _ = _run(srv.base_url, wl, tmp_path, "503", http_client=http_client)
    table = _check_common(s, 30, "http_error", 6)
    assert table[("http_error", "HTTP 503 Retry-After")] == s["counts"]["by_status"]["http_error"]
    assert "HTTP 503 (Retry-After: 2)" in s["errors"]["examples"]["http_error"]


def test_invalid_utf8_in_a_stream_is_an_invalid_response_naming_it(start_sim, tmp_path,
                                                                   http_client):
    srv = start_sim("--fault-rate", "0.5", "--fault-kind", "utf8", "--step-base-ms", "2")
    wl = synthetic_workload(num_requests=30, request_rate=30.0, input_len=10, output_len=8, seed=3)
    s, run = _run(srv.base_url, wl, tmp_path, "utf8", http_client=http_client)
    table = _check_common(s, 30, "invalid_response", 6)
    assert table[("invalid_response", "invalid UTF-8")] == s["counts"]["by_status"]["invalid_response"]
    assert "invalid UTF-8 at byte" in s["errors"]["examples"]["invalid_response"]


def test_a_giant_chunk_is_parsed_whole_off_the_event_loop(start_sim, tmp_path, http_client):
    # One 4 MB SSE event in half of the responses: a valid stream, so ok; parsed in a thread.
    # Receiving 40 MB/s on a 2-core machine that also runs the server generating them costs
    # the event loop pauses of ~30 ms (measured): the schedule keeps going, within GIANT_LAG_MS.
    srv = start_sim("--fault-rate", "0.5", "--fault-kind", "giant", "--fault-giant-bytes",
                    "4000000", "--step-base-ms", "2")
    wl = synthetic_workload(num_requests=20, request_rate=20.0, input_len=10, output_len=8, seed=3)
    s, run = _run(srv.base_url, wl, tmp_path, "giant", http_client=http_client)
    assert s["counts"]["by_status"] == {"ok": 20}
    big = col(run.requests, "response_bytes", np.int64) > 4_000_000
    assert big.sum() >= 5
    assert (col(run.requests, "output_tokens", np.int64) == 8).all()  # usage, not chunks
    assert s["self_check"]["send_lag_ms"]["p99"] < GIANT_LAG_MS and s["counts"]["sent"] == 20


def test_a_response_past_max_response_bytes_is_cut_off(start_sim, tmp_path, http_client):
    srv = start_sim("--fault-rate", "0.5", "--fault-kind", "giant", "--fault-giant-bytes",
                    "4000000", "--step-base-ms", "2")
    wl = synthetic_workload(num_requests=20, request_rate=20.0, input_len=10, output_len=8, seed=3)
    s, run = _run(srv.base_url, wl, tmp_path, "cap", max_response_bytes=1_000_000,
                  http_client=http_client)
    table = _check_common(s, 20, "invalid_response", 5, lag_ms=GIANT_LAG_MS)
    assert table[("invalid_response", "too large")] == s["counts"]["by_status"]["invalid_response"]
    cut = col(run.requests, "response_bytes", np.int64)[
        run.requests.column("status").to_numpy(zero_copy_only=False) == "invalid_response"]
    # at most one buffered read past the cap is kept (aiohttp buffers up to 2 x read_bufsize)
    assert (cut <= 1_000_000 + (3 << 20)).all(), cut


def test_a_stream_that_never_ends_is_bounded_by_the_timeout(start_sim, tmp_path, http_client):
    srv = start_sim("--fault-rate", "0.5", "--fault-kind", "endless", "--step-base-ms", "2")
    wl = synthetic_workload(num_requests=20, request_rate=20.0, input_len=10, output_len=8, seed=3)
    t = time.monotonic()
    s, run = _run(srv.base_url, wl, tmp_path, "endless", timeout_s=1.0, http_client=http_client)
    assert time.monotonic() - t < 15  # 1 s of load + 1 s timeout + start and summary
    table = _check_common(s, 20, "timeout", 5)
    assert table[("timeout", "timeout")] == s["counts"]["by_status"]["timeout"]
    failed = run.requests.column("status").to_numpy(zero_copy_only=False) == "timeout"
    span = (col(run.requests, "t_done") - col(run.requests, "t_sent"))[failed]
    assert np.all((span > 0.95) & (span < 2.0))  # cut at the 1 s timeout, not later


# -- faults of the proxy -------------------------------------------------------------------

def _proxied(start_sim, start_proxy, *flags):
    srv = start_sim("--step-base-ms", "2")
    return start_proxy(srv.base_url, "--fault-rate", "0.5", "--seed", "1", *flags)


def test_a_delay_before_the_headers_shows_in_first_byte_and_ttft(start_sim, start_proxy, tmp_path,
                                                                 http_client):
    px = _proxied(start_sim, start_proxy, "--fault", "delay_headers", "--delay-s", "0.4")
    wl = synthetic_workload(num_requests=30, request_rate=20.0, input_len=10, output_len=8, seed=3)
    s, run = _run(px.base_url, wl, tmp_path, "dh", preflight=False, http_client=http_client)
    assert s["counts"]["by_status"] == {"ok": 30}
    fb = col(run.requests, "t_first_byte") - col(run.requests, "t_sent")
    late = fb >= 0.4
    assert 5 <= late.sum() <= 25 and np.all(fb[~late] < 0.2)
    ttft = col(run.requests, "t_first_token") - col(run.requests, "t_sent")
    assert np.all(ttft[late] >= 0.4)
    assert s["self_check"]["send_lag_ms"]["p99"] < LAG_P99_MS


def test_a_delay_before_the_headers_past_the_timeout_is_a_timeout(start_sim, start_proxy, tmp_path,
                                                                  http_client):
    px = _proxied(start_sim, start_proxy, "--fault", "delay_headers", "--delay-s", "30")
    wl = synthetic_workload(num_requests=20, request_rate=20.0, input_len=10, output_len=8, seed=3)
    t = time.monotonic()
    s, _ = _run(px.base_url, wl, tmp_path, "dht", preflight=False, timeout_s=1.0,
                http_client=http_client)
    assert time.monotonic() - t < 15  # the 30 s delay did not hold the run
    table = _check_common(s, 20, "timeout", 4)
    assert table[("timeout", "timeout")] == s["counts"]["by_status"]["timeout"]


def test_a_network_stall_mid_stream_shows_as_one_long_gap(start_sim, start_proxy, tmp_path,
                                                          http_client):
    px = _proxied(start_sim, start_proxy, "--fault", "stall", "--delay-s", "0.4")
    wl = synthetic_workload(num_requests=30, request_rate=20.0, input_len=10, output_len=8, seed=3)
    s, run = _run(px.base_url, wl, tmp_path, "st", preflight=False, http_client=http_client)
    assert s["counts"]["by_status"] == {"ok": 30}
    gap = col(run.requests, "max_itl")
    # >= 0.35, not 0.4: a read before the stall that the client timestamps a few ms late
    # (a busy event loop) shortens the gap it measures
    stalled = gap >= 0.35
    assert 5 <= stalled.sum() <= 25 and np.all(gap[~stalled] < 0.2)


@pytest.mark.parametrize(("fault", "cause"), [("reset", "reset"), ("truncate", "truncated body")])
def test_a_connection_broken_mid_stream_is_disconnected(start_sim, start_proxy, tmp_path, fault,
                                                        cause, http_client):
    px = _proxied(start_sim, start_proxy, "--fault", fault)
    wl = synthetic_workload(num_requests=30, request_rate=20.0, input_len=10, output_len=8, seed=3)
    s, run = _run(px.base_url, wl, tmp_path, fault, preflight=False, http_client=http_client)
    table = _check_common(s, 30, "disconnected", 5)
    assert table[("disconnected", cause)] == s["counts"]["by_status"]["disconnected"], table
    cut = run.requests.column("status").to_numpy(zero_copy_only=False) == "disconnected"
    assert np.all(np.isfinite(col(run.requests, "t_first_byte")[cut]))  # headers had come


# -- the server killed mid-run and restarted -----------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_killed_and_restarted_mid_run(tmp_path, http_client):
    port = _free_port()
    srv = sim_server(tmp_path / "a.log", "--step-base-ms", "5", port=port).start(timeout_s=30)
    wl = synthetic_workload(num_requests=80, request_rate=20.0, process="constant",
                            input_len=10, output_len=20, seed=4)
    again: list = []

    def kill_and_restart() -> None:
        time.sleep(1.0)
        srv.kill()
        time.sleep(1.0)
        again.append(sim_server(tmp_path / "b.log", "--step-base-ms", "5", port=port)
                     .start(timeout_s=30))

    th = threading.Thread(target=kill_and_restart)
    th.start()
    try:
        s, run = _run(srv.base_url, wl, tmp_path, "restart", http_client=http_client)
    finally:
        th.join()
        for p in again:
            p.stop()
    by = s["counts"]["by_status"]
    assert sum(by.values()) == 80
    t_int = col(run.requests, "t_intended")
    status = run.requests.column("status").to_numpy(zero_copy_only=False)
    assert np.all(status[t_int < 0.6] == "ok")  # before the kill
    assert by.get("connect_error", 0) >= 10  # while it was down (~1 s at 20/s)
    late = t_int > 3.0  # the restarted server answers; a reused dead connection may fail once
    assert (status[late] == "ok").sum() >= late.sum() - 1
    assert s["validity"]["verdict"] == "VALID"  # the schedule held throughout
    assert s["latency_ms"]["from_sent"]["e2e"]["count"] == by["ok"]


# -- memory stays bounded --------------------------------------------------------------------

def _peak_rss_mib(argv: list[str]) -> tuple[int, float]:
    """Run ``argv``; its exit code and peak resident memory (MiB), from wait4's rusage."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    t = time.monotonic()
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, ru.ru_maxrss / 1024
        if time.monotonic() - t > 120:
            p.send_signal(signal.SIGKILL)
        time.sleep(0.05)


def test_memory_stays_bounded_under_giant_responses(start_sim, tmp_path):
    # 16 concurrent 16 MB responses: kept whole they would take > 256 MB; cut at 2 MB each
    # the generator's peak memory stays within 100 MB of a run without them.
    args = ["--model", "sim-llm", "--request-rate", "inf", "--num-prompts", "16",
            "--random-input-len", "10", "--random-output-len", "8", "--no-progress",
            "--skip-preflight", "--max-response-bytes", "2000000", "--result-dir", str(tmp_path)]
    base = [sys.executable, "-m", "loadgen", "run"]
    plain = start_sim("--step-base-ms", "2")
    rc0, rss0 = _peak_rss_mib([*base, "--base-url", plain.base_url, *args, "--run-name", "p"])
    giant = start_sim("--step-base-ms", "2", "--fault-rate", "1", "--fault-kind", "giant",
                      "--fault-giant-bytes", str(16 << 20))
    rc1, rss1 = _peak_rss_mib([*base, "--base-url", giant.base_url, *args, "--run-name", "g"])
    s = orjson.loads((tmp_path / "g" / "summary.json").read_bytes())
    assert rc0 == 0 and s["counts"]["by_status"] == {"invalid_response": 16}
    assert rss1 < rss0 + 100, (rss0, rss1)
