"""The PyTorch server end to end: launched by servers.launch on 127.0.0.1 with the random
"small" Llama (~25 M parameters, made locally and cached per machine), loaded by the generator.

Loads are bounded: 12 requests at 40 req/s (0.3 s of schedule), 8-16 output tokens each. A
decode step of this model takes 15-30 ms on a busy 2-core machine (and surely more than 3 ms on
any CPU), so a request lasts longer than the 25 ms between arrivals and requests overlap. The
send-lag limit is relaxed (the server's model thread competes with the generator for the
cores); the generator's own accuracy is tested against the sim, not here.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from analysis.load import load_run  # noqa: E402
from analysis.metrics import col  # noqa: E402
from arrivals.workload import synthetic_workload  # noqa: E402
from loadgen.clients.openai import ClientConfig  # noqa: E402
from loadgen.run import RunSpec, execute  # noqa: E402
from servers.launch import RunningServer, ServeSettings, launch  # noqa: E402
from servers.models.hf_tiny import cached_tiny_hf  # noqa: E402
from servers.pytorch.runtime import PytorchRuntime  # noqa: E402

pytestmark = pytest.mark.e2e

NAME = "llama-small-random"


@pytest.fixture(scope="module")
def small_model() -> Path:
    return cached_tiny_hf("small")


def _launch(model: Path, log_dir: Path, batching: str) -> RunningServer:
    settings = ServeSettings(model=str(model), max_batch_size=4, served_model_name=NAME,
                             log_dir=log_dir, startup_timeout_s=120)
    return launch(PytorchRuntime(batching=batching, threads=1), settings)


def _metric(base_url: str, name: str) -> float:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def _run_load(srv: RunningServer, tmp: Path, endpoint: str):
    wl = synthetic_workload(num_requests=12, request_rate=40.0, process="constant",
                            input_len=32, output_len=12, range_ratio=0.33, seed=7)
    assert set(wl.output_tokens.tolist()) <= set(range(8, 17))
    client = ClientConfig(base_url=srv.base_url, model=NAME, endpoint=endpoint,
                          ignore_eos=True, timeout_s=60)
    res = execute(RunSpec(client=client, workload=wl, result_dir=tmp, run_name="pt",
                          progress=False, quiet=True, max_send_lag_ms=200.0,
                          do_preflight=False))  # so the server's counters are the load's
    return wl, res


def _assert_every_request_got_its_exact_length(wl, res) -> None:
    run = load_run(res.run_dir)
    r = run.requests
    assert r.column("status").to_pylist() == ["ok"] * 12, res.text
    assert r.column("output_tokens_source").to_pylist() == ["usage"] * 12
    ids = col(r, "request_id", np.int64)
    assert (col(r, "output_tokens", np.int64) == wl.output_tokens[ids]).all()
    # One SSE chunk with text per token (the random model only emits visible ASCII tokens).
    assert (col(r, "n_chunks", np.int64) == wl.output_tokens[ids]).all()


def test_continuous_batching_serves_an_open_loop_load_with_exact_lengths(small_model, tmp_path):
    with _launch(small_model, tmp_path, "continuous") as srv:
        info = srv.info()
        wl, res = _run_load(srv, tmp_path, "/v1/completions")
        _assert_every_request_got_its_exact_length(wl, res)
        # Requests overlapped: at least one decode step ran with more than one sequence.
        assert 2 <= _metric(srv.base_url, "pytorch:batch_size_max") <= 4
        assert _metric(srv.base_url, "pytorch:request_success_total") == 12
        assert _metric(srv.base_url, "pytorch:generation_tokens_total") == wl.output_tokens.sum()
        with urllib.request.urlopen(srv.base_url + "/version", timeout=10) as r:
            version = json.loads(r.read())
    import torch
    import transformers

    assert info["runtime"] == "pytorch"
    assert info["version"]["torch"] == torch.__version__
    assert info["version"]["transformers"] == transformers.__version__
    argv = info["argv"]
    assert argv[argv.index("--batching") + 1] == "continuous"
    assert argv[argv.index("--max-batch-size") + 1] == "4"
    assert argv[argv.index("--threads") + 1] == "1"
    assert version["flags"]["batching"] == "continuous"
    assert version["flags"]["max_batch_size"] == 4
    assert version["versions"]["transformers"] == transformers.__version__


def test_static_batching_serves_chat_with_exact_lengths_in_batches(small_model, tmp_path):
    with _launch(small_model, tmp_path, "static") as srv:
        info = srv.info()
        wl, res = _run_load(srv, tmp_path, "/v1/chat/completions")
        _assert_every_request_got_its_exact_length(wl, res)
        # Requests that arrive while a batch runs wait and form the next batch together.
        assert 2 <= _metric(srv.base_url, "pytorch:batch_size_max") <= 4
        steps = _metric(srv.base_url, "pytorch:decode_steps_total")
    argv = info["argv"]
    assert argv[argv.index("--batching") + 1] == "static"
    # Each request's first token comes from its prefill, the rest from batched steps; batching
    # means fewer steps than tokens decoded.
    assert steps < (wl.output_tokens - 1).sum()
