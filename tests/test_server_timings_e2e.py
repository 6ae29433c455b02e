"""Server-reported timings and per-chunk token counts through a real run against the sim,
whose queue and prefill are known from its cost model.

The sim runs one sequence at a time (--max-batch-size 1) with 20 ms steps, so a burst of N
requests queues: the k-th to be admitted waits for the k before it, each taking one prefill
step and OUT-1 decode steps. It sends two tokens per chunk after the first
(--stream-interval 2) and, asked for continuous usage stats, says how many each chunk holds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from analysis.ttft_parts import ttft_components
from arrivals.workload import synthetic_workload
from loadgen.clients.openai import ClientConfig
from loadgen.run import RunSpec, execute
from servers.process import sim_server
from servers.sim.model import SimCosts, step_time

pytestmark = pytest.mark.e2e
N, IN, OUT = 5, 50, 5
COSTS = SimCosts(step_base=0.020, step_per_seq=0.00025, prefill_per_token=0.0001)
PREFILL = step_time(COSTS, 1, IN)  # 25.25 ms: the iteration that admits and prefills
SERVICE = PREFILL + (OUT - 1) * step_time(COSTS, 1, 0)  # one request alone


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("timings")
    srv = sim_server(tmp / "sim.log", "--max-batch-size", "1", "--step-base-ms", "20",
                     "--step-per-seq-ms", "0.25", "--prefill-per-token-ms", "0.1",
                     "--stream-interval", "2").start(timeout_s=30)
    out = {}
    try:
        wl = synthetic_workload(num_requests=N, request_rate=100.0, process="constant",
                                input_len=IN, output_len=OUT, seed=1)
        wl = replace(wl, t_intended=np.zeros(N))
        for name, continuous in (("counted", True), ("estimated", False)):
            cfg = ClientConfig(base_url=srv.base_url, model="sim-llm", ignore_eos=True,
                               continuous_usage=continuous)
            res = execute(RunSpec(client=cfg, workload=wl, result_dir=tmp, run_name=name,
                                  progress=False, quiet=True))
            out[name] = res.run_dir
    finally:
        srv.stop()
    return out


def test_records_carry_the_sims_timings_and_chunk_tokens(runs):
    t = pq.read_table(runs["counted"] / "requests.parquet").to_pydict()
    assert t["status"] == ["ok"] * N
    assert t["chunk_tokens"] == [[1, 2, 2]] * N  # the first token alone, then pairs
    assert t["n_chunks"] == [3] * N and t["output_tokens"] == [OUT] * N
    # the prefill is the admitting iteration, on the engine's schedule: exactly the model's
    # (when its event loop runs late the sim re-anchors its schedule before admitting)
    assert t["server_prefill_s"] == pytest.approx([PREFILL] * N, abs=1e-6)
    # decoding: the model's OUT-1 steps; a busy machine can only make the sim's steps late
    decode = np.asarray(t["server_decode_s"])
    assert np.all(decode > SERVICE - PREFILL - 1e-6)
    assert np.median(decode) == pytest.approx(SERVICE - PREFILL, rel=0.2)
    # FIFO, one at a time: the k-th admitted waited for the k before it, so its queue ends
    # when the previous one's decode ends (both on the sim's schedule): queue_k + arrival_k =
    # arrival_(k-1) + queue_(k-1) + prefill + decode_(k-1), arrivals ~ the client's t_sent
    order = np.argsort(t["server_queue_s"])
    q, sent = np.asarray(t["server_queue_s"])[order], np.asarray(t["t_sent"])[order]
    done_prev = sent[:-1] + q[:-1] + PREFILL + decode[order][:-1]
    assert q[0] < 0.005
    assert sent[1:] + q[1:] == pytest.approx(done_prev, abs=0.010)
    # and in the model's terms: k whole requests, give or take the late steps above
    assert np.all(q >= SERVICE * np.arange(N) - 0.010)
    assert np.all(q <= 1.2 * SERVICE * np.arange(N) + 0.010)


def test_ttft_components_add_up_and_match_the_sims_model(runs):
    t = pq.read_table(runs["counted"] / "requests.parquet")
    c = ttft_components(t)
    assert c.num_rows == N
    col = {k: c.column(k).to_numpy() for k in c.column_names}
    total = col["generator_lag"] + col["server_queue"] + col["server_prefill"] + col["transport_other"]
    assert total == pytest.approx(col["ttft_intended"], abs=1e-9)
    order = np.argsort(col["server_queue"])
    # queue + prefill is the model's k * SERVICE + PREFILL for the k-th admitted (a busy
    # machine can only add late steps: up to 20 % here)
    qp = (col["server_queue"] + col["server_prefill"])[order]
    model = SERVICE * np.arange(N) + PREFILL
    assert np.all(qp >= model - 0.010) and np.all(qp <= 1.2 * model + 0.010)
    # what is left is the loopback network, HTTP and the timer's wake-up: small, not negative
    assert np.all(col["transport_other"] > -0.001) and np.median(col["transport_other"]) < 0.02
    s = orjson.loads((runs["counted"] / "summary.json").read_bytes())["ttft_decomposition"]
    assert s["available"] and s["n_requests"] == N and s["queue_reported"] == N
    assert sum(v["share_of_mean_ttft"] for v in s["components_ms"].values()) == pytest.approx(1)
    assert s["components_ms"]["server_prefill"]["mean"] == pytest.approx(PREFILL * 1e3, abs=1e-3)


def test_per_token_itl_is_one_step_whether_counted_or_estimated(runs):
    decode_step_ms = step_time(COSTS, 1, 0) * 1e3
    for name in ("counted", "estimated"):
        s = orjson.loads((runs[name] / "summary.json").read_bytes())
        lat = s["latency_ms"]["from_sent"]
        # a 2-token chunk comes every two steps; per token that is one step
        assert lat["itl"]["p50"] == pytest.approx(2 * decode_step_ms, rel=0.1)
        assert lat["itl_per_token"]["p50"] == pytest.approx(decode_step_ms, rel=0.1)
        assert lat["itl_per_token"]["count"] == N * (OUT - 1)
        basis = s["tokens"]["per_chunk"]
        assert basis["server" if name == "counted" else "estimated"] == N
    text = (runs["estimated"] / "summary.txt").read_text()
    assert "ITL (per token, est.)" in text and "ESTIMATED" in text
