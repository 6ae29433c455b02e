"""The generator against the real reference server on 127.0.0.1: accuracy, open loop, faults.

Every load here is bounded in count and time. Tolerances are stated next to each assertion
and are about timer resolution (about 1 ms on an event loop) and a busy 2-core machine.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from analysis.load import load_run
from analysis.metrics import col, derive
from arrivals.workload import Workload, synthetic_workload
from loadgen.clients.openai import ClientConfig
from loadgen.preflight import PreflightError
from loadgen.run import RunSpec, execute
from servers.sim.model import SimCosts, predict_isolated

pytestmark = pytest.mark.e2e


def _spec(url: str, wl: Workload, tmp: Path, name: str, **kw) -> RunSpec:
    keys = ("endpoint", "stream", "model", "ignore_eos", "http_client")
    client_kw = {k: kw.pop(k) for k in list(kw) if k in keys}
    client = ClientConfig(base_url=url, **{"model": "sim-llm", **client_kw})
    return RunSpec(client=client, workload=wl, result_dir=tmp, run_name=name, progress=False, **kw)


@pytest.mark.parametrize("http_client", ["aiohttp", "lean"])
@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_measured_ttft_and_itl_match_the_cost_model_at_low_load(start_sim, tmp_path, endpoint,
                                                                http_client):
    # 10 ms per step, 0.05 ms per prompt token: alone, TTFT = 10 + 0.5 + 0.05*200 = 20.5 ms and
    # ITL = 10.5 ms. At 4 req/s with 20-token outputs (~0.2 s each) requests rarely overlap.
    srv = start_sim("--step-base-ms", "10", "--step-per-seq-ms", "0.5", "--prefill-per-token-ms", "0.05")
    costs = SimCosts(step_base=0.010, step_per_seq=0.0005, prefill_per_token=0.00005)
    pred = predict_isolated(costs, 200, 20)
    wl = synthetic_workload(num_requests=16, request_rate=4.0, process="constant",
                            input_len=200, output_len=20, seed=1)
    res = execute(_spec(srv.base_url, wl, tmp_path, "acc", endpoint=endpoint,
                        http_client=http_client))
    assert res.exit_code == 0, res.text
    run = load_run(res.run_dir)
    d = derive(run.requests)
    assert d.ok.all()
    assert (col(run.requests, "output_tokens", np.int64) == 20).all()
    assert (col(run.requests, "input_tokens", np.int64) == 200).all()
    # Tolerance: 2 ms + 10 % (timer granularity and a shared 2-core machine).
    assert abs(np.median(d.ttft_sent) - pred["ttft"]) < 0.002 + 0.1 * pred["ttft"]
    assert abs(np.median(d.itl) - pred["itl"]) < 0.002 + 0.1 * pred["itl"]
    assert abs(np.median(d.e2e_sent) - pred["e2e"]) < 0.004 + 0.1 * pred["e2e"]
    assert np.percentile(d.send_lag, 99) < 0.005


def test_a_stalled_server_does_not_slow_the_schedule(start_sim, tmp_path):
    # The server stalls for 1.5 s early in a 3 s run at 20 req/s. Open loop: requests keep
    # going out on time (send lag stays small) while in-flight grows, and latency measured from
    # t_intended includes the stall for the requests caught in it.
    srv = start_sim("--step-base-ms", "2", "--max-batch-size", "64")
    wl = synthetic_workload(num_requests=60, request_rate=20.0, process="constant",
                            input_len=10, output_len=5, seed=2)
    import threading

    def stall():
        # Timed from the run's start (its manifest appears just before t0), not from the test's:
        # preflight and the environment manifest take a variable time on a busy machine.
        manifest = tmp_path / "stall" / "manifest.json"
        deadline = time.monotonic() + 30
        while not manifest.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.5)
        urllib.request.urlopen(urllib.request.Request(srv.base_url + "/admin/pause?seconds=1.5",
                                                      method="POST"), timeout=5).read()

    th = threading.Thread(target=stall)
    th.start()
    res = execute(_spec(srv.base_url, wl, tmp_path, "stall"))
    th.join()
    run = load_run(res.run_dir)
    d = derive(run.requests)
    assert d.ok.all()
    assert np.percentile(d.send_lag, 99) < 0.005  # the schedule held
    ts = run.timeseries.to_pydict()
    assert max(ts["in_flight"]) >= 15  # ~1.5 s x 20 req/s piled up during the stall
    t_int = col(run.requests, "t_intended")
    caught = (t_int > 0.6) & (t_int < 1.5)
    assert np.all(d.e2e_intended[caught] > 0.3)  # stall included in user-visible latency
    assert np.median(d.e2e_intended[t_int > 2.6]) < 0.1  # and afterwards back to normal


@pytest.mark.parametrize(
    ("kind", "status", "needle"),
    [
        ("http500", "http_error", "HTTP 500"),
        ("http429", "http_error", "Retry-After: 1"),
        ("malformed", "invalid_response", "malformed SSE"),
        ("reset", "disconnected", ""),
    ],
)
def test_each_fault_is_recorded_with_its_cause_and_kept_out_of_latency(start_sim, tmp_path, kind, status, needle):
    srv = start_sim("--fault-rate", "0.5", "--fault-kind", kind, "--step-base-ms", "2")
    wl = synthetic_workload(num_requests=40, request_rate=40.0, input_len=10, output_len=8, seed=3)
    res = execute(_spec(srv.base_url, wl, tmp_path, kind))
    s = res.summary
    assert res.exit_code == 0  # the generator kept its schedule; failures are counted, not fatal
    by = s["counts"]["by_status"]
    assert by.get(status, 0) >= 8 and by.get("ok", 0) >= 8 and sum(by.values()) == 40
    assert needle in s["errors"]["examples"][status]
    assert s["completed"] == by["ok"] and s["latency_ms"]["from_sent"]["e2e"]["count"] == by["ok"]


def test_server_killed_mid_run_fails_the_rest_but_the_run_completes(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "5")
    wl = synthetic_workload(num_requests=40, request_rate=20.0, process="constant",
                            input_len=10, output_len=40, seed=4)
    import threading

    killer = threading.Timer(0.8, srv.kill)
    killer.start()
    res = execute(_spec(srv.base_url, wl, tmp_path, "killed"))
    killer.join()
    by = res.summary["counts"]["by_status"]
    assert by.get("ok", 0) >= 5
    assert by.get("connect_error", 0) >= 15  # everything after the kill cannot connect
    assert by.get("disconnected", 0) >= 1  # streams cut mid-response
    assert sum(by.values()) == 40 and res.summary["validity"]["verdict"] == "VALID"


def test_max_concurrency_is_closed_loop_and_records_slot_wait(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "5")
    wl = synthetic_workload(num_requests=12, request_rate=100.0, process="constant",
                            input_len=10, output_len=10, seed=5)
    from loadgen.engine import EngineOptions

    res = execute(_spec(srv.base_url, wl, tmp_path, "cl", engine=EngineOptions(max_concurrency=2)))
    s = res.summary
    assert s["mode"] == "closed-loop (max_concurrency=2)"
    assert s["self_check"]["slot_wait_ms"]["max"] > 100  # 12 requests x ~55 ms through 2 slots
    assert s["validity"]["verdict"] == "VALID"  # slot waiting is not the generator's lag
    # user-visible TTFT includes the wait for a slot
    assert s["latency_ms"]["from_intended"]["ttft"]["p99"] > s["latency_ms"]["from_sent"]["ttft"]["p99"] + 50


def test_non_streaming_requests_time_the_whole_response(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "2")
    wl = synthetic_workload(num_requests=5, request_rate=20.0, input_len=10, output_len=6, seed=6)
    res = execute(_spec(srv.base_url, wl, tmp_path, "ns", stream=False))
    run = load_run(res.run_dir)
    assert res.summary["counts"]["ok"] == 5
    assert np.allclose(col(run.requests, "t_first_token"), col(run.requests, "t_done"))
    assert (col(run.requests, "output_tokens", np.int64) == 6).all()


def test_preflight_names_a_wrong_model_and_lists_the_served_ones(start_sim, tmp_path):
    srv = start_sim()
    wl = synthetic_workload(num_requests=2, request_rate=1.0, seed=0)
    with pytest.raises(PreflightError, match="'nope' is not served .* sim-llm"):
        execute(_spec(srv.base_url, wl, tmp_path, "x", model="nope"))
    assert not (tmp_path / "x").exists()  # nothing written for a run that never started


def test_preflight_reports_an_unreachable_server(tmp_path):
    wl = synthetic_workload(num_requests=2, request_rate=1.0, seed=0)
    with pytest.raises(PreflightError, match="cannot connect to http://127.0.0.1:9"):
        execute(_spec("http://127.0.0.1:9", wl, tmp_path, "x"))


def test_a_stream_that_stalls_past_the_timeout_is_recorded_as_timeout(start_sim, tmp_path):
    srv = start_sim("--fault-rate", "0.5", "--fault-kind", "stall", "--fault-stall-s", "30",
                    "--step-base-ms", "2")
    wl = synthetic_workload(num_requests=10, request_rate=20.0, input_len=10, output_len=20, seed=7)
    spec = _spec(srv.base_url, wl, tmp_path, "to")
    spec = RunSpec(**{**spec.__dict__, "client": ClientConfig(**{**spec.client.__dict__, "timeout_s": 1.0})})
    t = time.monotonic()
    res = execute(spec)
    assert time.monotonic() - t < 10  # bounded by the 1 s timeout, not the 30 s stall
    by = res.summary["counts"]["by_status"]
    assert by.get("timeout", 0) >= 2 and by.get("ok", 0) >= 2 and sum(by.values()) == 10
    assert "no complete response within 1 s" in res.summary["errors"]["examples"]["timeout"]


def test_no_keepalive_opens_a_connection_per_request_and_keepalive_reuses_them():
    import asyncio

    from loadgen.clients.pool import make_session
    from loadgen.engine import EngineOptions

    async def connectors() -> tuple[bool, bool]:
        async with make_session(EngineOptions(), 5.0) as a, \
                make_session(EngineOptions(keepalive=False), 5.0) as b:
            return a.connector.force_close, b.connector.force_close

    assert asyncio.run(connectors()) == (False, True)
