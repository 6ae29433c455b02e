"""A BurstGPT trace replayed by ``loadgen run --trace`` against the reference server."""

import subprocess
import sys

import numpy as np
import pytest

from analysis.load import load_run
from analysis.metrics import col
from arrivals.traces import read_burstgpt
from tests.test_arrivals_traces import BURSTGPT, need

pytestmark = pytest.mark.e2e


def test_run_replays_the_burstgpt_trace_scaled_in_time_with_its_lengths(start_sim, tmp_path):
    tr = read_burstgpt(need(BURSTGPT))
    ok = tr.ok
    t20, in20, out20 = tr.t[ok][:20], tr.input_tokens[ok][:20], tr.output_tokens[ok][:20]
    speedup = (t20[-1] - t20[0]) / 2.0  # the 20 requests span 2 s
    srv = start_sim("--step-base-ms", "1")
    p = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--base-url", srv.base_url, "--model", "sim-llm",
         "--trace", str(BURSTGPT), "--trace-format", "burstgpt", "--trace-speedup", str(speedup),
         "--num-prompts", "20", "--ignore-eos", "--result-dir", str(tmp_path), "--run-name", "tr",
         "--no-progress"],
        capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr + p.stdout
    run = load_run(tmp_path / "tr")
    order = np.argsort(col(run.requests, "request_id", np.int64))
    t_int = col(run.requests, "t_intended")[order]
    t_sent = col(run.requests, "t_sent")[order]
    expected = (t20 - t20[0]) / speedup
    assert np.allclose(t_int, expected, atol=1e-9)  # the schedule is the scaled trace
    assert np.all(np.abs(t_sent - t_int) < 0.02)  # and it was kept (20 ms: busy 2-core box)
    # the sim counts one token per whitespace word: prompt tokens = the trace's input lengths
    assert np.array_equal(col(run.requests, "input_tokens", np.int64)[order], in20)
    assert np.array_equal(col(run.requests, "output_tokens", np.int64)[order], out20)
    assert run.manifest["workload"]["failed_dropped"] == 17  # of the whole trace, before the cap
    assert run.manifest["workload"]["trace"]["transforms"] == [
        {"op": "speedup", "factor": speedup}]
