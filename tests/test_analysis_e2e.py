"""analyze() against the real reference server: the fitted per-token costs are the sim's."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.load import load_run
from analysis.run_analysis import analyze
from arrivals.workload import synthetic_workload
from loadgen.clients.openai import ClientConfig
from loadgen.run import RunSpec, execute

pytestmark = pytest.mark.e2e


def test_fits_recover_the_sims_prefill_and_decode_costs_at_low_load(start_sim, tmp_path):
    # Sim: step = 5 + 0.5 ms (one sequence), prefill 0.05 ms/token. Alone (servers/sim/model.py):
    #   ttft = 5.5 ms + 0.05 ms * input        e2e = 0.05 ms * input + 5.5 ms * output
    # 40 requests, one every 200 ms, inputs 40..760 and outputs 2..30 tokens (range_ratio 0.9):
    # the longest (~200 ms) barely overlaps the next, so each request runs nearly alone.
    srv = start_sim("--step-base-ms", "5", "--step-per-seq-ms", "0.5",
                    "--prefill-per-token-ms", "0.05")
    wl = synthetic_workload(num_requests=40, request_rate=5.0, process="constant",
                            input_len=400, output_len=16, range_ratio=0.9, seed=7)
    res = execute(RunSpec(client=ClientConfig(base_url=srv.base_url, model="sim-llm"),
                          workload=wl, result_dir=tmp_path, run_name="mixed", progress=False))
    run = load_run(res.run_dir)
    status = run.requests.column("status").to_numpy(zero_copy_only=False)
    assert (status == "ok").all()
    inp = run.requests.column("input_tokens").to_numpy()
    assert inp.min() < 100 and inp.max() > 600  # the lengths really are mixed
    a = analyze(run, n_boot=100)
    e2e, ttft = a["fits"]["e2e"], a["fits"]["ttft"]
    # Tolerances: 20 % on the prefill cost (a 760-token prompt costs 38 ms, measured with
    # ~1 ms timer noise), 0.6 ms (11 %) on the decode step (asyncio sleep overshoot and SSE
    # delivery add a little to every step on a shared 2-core machine).
    assert abs(e2e["b_ms_per_input_token"] - 0.05) < 0.01, e2e
    assert abs(e2e["c_ms_per_output_token"] - 5.5) < 0.6, e2e
    assert abs(ttft["b_ms_per_input_token"] - 0.05) < 0.01, ttft
    assert 5.0 < ttft["a_ms"] < 5.5 + 4.0, ttft  # one step plus loopback/HTTP overhead
    lo, hi = e2e["ci95"]["c_ms_per_output_token"]
    assert lo <= e2e["c_ms_per_output_token"] <= hi and hi - lo < 1.5
    assert a["window"]["n_requests"] >= 30
    # the decode cadence is the sim's step: ITL p50 within 1 ms of 5.5 ms
    assert abs(a["percentiles_ci"]["itl"]["p50"]["value_ms"] - 5.5) < 1.0
    assert np.isfinite(a["smoothness"]["fluidity_index"])
