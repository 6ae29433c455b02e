"""NVIDIA Triton end to end: the real tritonserver 2.51 (from the nvidia-pytriton wheel,
installed into the per-machine cache by servers/triton/dist.py on first use) serves the tiny
random-weight Llama (made locally) as a decoupled, dynamically batched Python-backend model,
plus the image_blur example; launched through servers.launch on 127.0.0.1, loaded open-loop by
the generator through the OpenAI gateway and through the native gRPC, HTTP generate_stream and
KServe v2 clients.

One server serves the whole module (its start-up, about 15 s, dominates). Loads are bounded:
at most 24 requests, at most 3 s of schedule, 6-14 output tokens. The tiny model never emits
EOS, so every request must get exactly the tokens it asked for. The send-lag limit is relaxed
(the server competes with the generator for two cores); the generator's own accuracy is
tested against the sim, not here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tritonclient")

from analysis.load import load_run  # noqa: E402
from analysis.metrics import col  # noqa: E402
from arrivals.workload import synthetic_workload  # noqa: E402
from loadgen.clients.kserve import KServeClient, KServeConfig, parse_tensor_spec  # noqa: E402
from loadgen.clients.openai import ClientConfig  # noqa: E402
from loadgen.clients.triton import TritonConfig, TritonGrpcClient, TritonHttpClient  # noqa: E402
from loadgen.run import RunSpec, execute  # noqa: E402
from servers.launch import RunningServer, ServeSettings, launch  # noqa: E402
from servers.models.hf_tiny import cached_tiny_hf  # noqa: E402
from servers.triton.dist import ensure_triton  # noqa: E402
from servers.triton.runtime import TritonRuntime  # noqa: E402

pytestmark = pytest.mark.e2e

NAME = "llama-tiny-random"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def triton(tmp_path_factory) -> RunningServer:
    ensure_triton()  # downloads and extracts the pinned wheel once per machine
    model = cached_tiny_hf("tiny")
    settings = ServeSettings(model=str(model), max_batch_size=4, served_model_name=NAME,
                             log_dir=tmp_path_factory.mktemp("triton-logs"),
                             startup_timeout_s=240)
    with launch(TritonRuntime(instances=2, image_model=True), settings) as srv:
        yield srv


def _metric(url: str, name: str, model: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    assert m, f"{name} for {model} not in {url}"
    return float(m.group(1))


def _workload(n: int = 16, rate: float = 16.0, seed: int = 3):
    wl = synthetic_workload(num_requests=n, request_rate=rate, input_len=16, output_len=10,
                            range_ratio=0.4, seed=seed)
    assert set(wl.output_tokens.tolist()) <= set(range(6, 15))
    return wl


def _run(client, wl, tmp: Path, name: str, srv: RunningServer, preflight: bool = True):
    return execute(RunSpec(client=client, workload=wl, result_dir=tmp, run_name=name,
                           progress=False, quiet=True, max_send_lag_ms=250.0,
                           do_preflight=preflight,
                           extra_manifest={"server_launch": srv.info()}))


def _assert_exact_tokens(wl, res) -> None:
    r = load_run(res.run_dir).requests
    n = len(wl)
    assert r.column("status").to_pylist() == ["ok"] * n, res.text
    assert r.column("output_tokens_source").to_pylist() == ["usage"] * n
    assert r.column("input_tokens_source").to_pylist() == ["usage"] * n
    ids = col(r, "request_id", np.int64)
    assert (col(r, "output_tokens", np.int64) == wl.output_tokens[ids]).all()
    # One streamed chunk with text per token (the model only emits visible ASCII tokens).
    assert (col(r, "n_chunks", np.int64) == wl.output_tokens[ids]).all()


def _assert_manifest_names_triton(res) -> dict:
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    launch_info = manifest["server_launch"]
    assert launch_info["runtime"] == "triton"
    assert launch_info["version"]["version"] == "2.51.0"
    assert launch_info["version"]["nvidia_pytriton"] == "0.7.0"
    argv = launch_info["argv"]
    assert argv[argv.index("--max-batch-size") + 1] == "4"
    assert argv[argv.index("--instances") + 1] == "2"
    assert argv[argv.index("--batching") + 1] == "dynamic"
    return manifest


def test_gateway_serves_an_open_loop_load_with_exact_lengths(triton, tmp_path):
    wl = _workload()
    client = ClientConfig(base_url=triton.base_url, model=NAME, ignore_eos=True, timeout_s=60)
    res = _run(client, wl, tmp_path, "gateway", triton)
    _assert_exact_tokens(wl, res)
    manifest = _assert_manifest_names_triton(res)
    assert manifest["config"]["client"]["kind"] == "openai"
    # The preflight read the gateway's /version: Triton's own metadata and model config.
    version = manifest["server"]["version"]
    assert version["triton"]["version"] == "2.51.0"
    assert version["model_config"]["maxBatchSize"] == 4
    assert version["model_config"]["modelTransactionPolicy"]["decoupled"] is True


def test_gateway_serves_chat_with_exact_lengths(triton, tmp_path):
    wl = _workload(n=8, rate=16.0, seed=5)
    client = ClientConfig(base_url=triton.base_url, model=NAME, ignore_eos=True,
                          endpoint="/v1/chat/completions", timeout_s=60)
    _assert_exact_tokens(wl, _run(client, wl, tmp_path, "chat", triton))


def test_native_grpc_streaming_client_gets_exact_lengths(triton, tmp_path):
    wl = _workload(seed=4)
    t = triton.info()["triton"]
    client = TritonGrpcClient(TritonConfig(t["grpc"], t["model"], "grpc", ignore_eos=True,
                                           timeout_s=60))
    res = _run(client, wl, tmp_path, "grpc", triton)
    _assert_exact_tokens(wl, res)
    r = load_run(res.run_dir).requests
    assert all(c == [1] * len(c) for c in r.column("chunk_tokens").to_pylist())
    assert min(r.column("request_bytes").to_pylist()) > 16  # the prompt and three tensors
    manifest = _assert_manifest_names_triton(res)
    assert manifest["config"]["client"]["kind"] == "triton-grpc"
    assert manifest["config"]["client"]["batched_source"] == "model config"


def test_native_http_generate_stream_client_gets_exact_lengths(triton, tmp_path):
    wl = _workload(seed=6)
    t = triton.info()["triton"]
    client = TritonHttpClient(TritonConfig(t["http"], t["model"], "http", ignore_eos=True,
                                           timeout_s=60))
    res = _run(client, wl, tmp_path, "http", triton)
    _assert_exact_tokens(wl, res)
    assert _assert_manifest_names_triton(res)["config"]["client"]["kind"] == "triton-http"


def test_dynamic_batching_puts_simultaneous_requests_into_shared_batches(triton, tmp_path):
    t = triton.info()["triton"]
    before = {k: _metric(t["metrics"], k, t["model"])
              for k in ("nv_inference_count", "nv_inference_exec_count")}
    wl = synthetic_workload(num_requests=8, request_rate=float("inf"), input_len=16,
                            output_len=24, seed=8)
    client = TritonGrpcClient(TritonConfig(t["grpc"], t["model"], "grpc", ignore_eos=True,
                                           timeout_s=60))
    res = _run(client, wl, tmp_path, "burst", triton, preflight=False)
    assert load_run(res.run_dir).requests.column("status").to_pylist() == ["ok"] * 8
    count = _metric(t["metrics"], "nv_inference_count", t["model"]) - \
        before["nv_inference_count"]
    execs = _metric(t["metrics"], "nv_inference_exec_count", t["model"]) - \
        before["nv_inference_exec_count"]
    assert count == 8
    assert 2 <= execs < 8  # 8 requests at once, 2 instances, batches of at most 4


def test_gateway_refuses_bad_requests_with_openai_errors(triton):
    def post(body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(triton.base_url + "/v1/completions",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = post({"model": "other", "prompt": "hi", "max_tokens": 2})
    assert status == 404 and body["error"]["param"] == "model"
    status, body = post({"model": NAME, "prompt": "hi", "max_tokens": 5000})
    assert status == 400 and "maximum context" in body["error"]["message"]
    status, body = post({"model": NAME, "prompt": "hi", "max_tokens": 3})
    assert status == 200 and body["usage"]["completion_tokens"] == 3


def test_gateway_passes_tritons_metrics_through(triton):
    with urllib.request.urlopen(triton.base_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert re.search(rf'^nv_inference_request_success{{model="{NAME}",version="1"}} \d+',
                     text, re.M)
    assert re.search(rf'^triton_gateway_requests_total{{model="{NAME}"}} \d+', text, re.M)


def test_kserve_latency_grows_with_payload_size_under_open_loop_load(triton, tmp_path):
    """The non-LLM model: 3x3 blur of 8x8 vs 512x512 RGB images (768 KiB, 4096 times the
    pixels), 18 requests at 3 req/s (a light load: a large image takes tens of ms on a busy
    2-core machine, a small one about 2 ms). Every request is ok, records carry the payload
    size, and the large images take longer (median)."""
    t = triton.info()["triton"]
    spec = parse_tensor_spec("image:UINT8:8x8x3|512x512x3")
    client = KServeClient(KServeConfig(t["http"], t["image_model"], inputs=(spec,),
                                       timeout_s=60))
    wl = synthetic_workload(num_requests=18, request_rate=3.0, seed=9)
    res = _run(client, wl, tmp_path, "kserve", triton)
    r = load_run(res.run_dir).requests
    assert r.column("status").to_pylist() == ["ok"] * 18, res.text
    size = col(r, "request_bytes", np.int64)
    labels = r.column("item_id").to_pylist()
    small, large = size < 10_000, size > 512 * 512 * 3
    assert (small | large).all() and small.sum() >= 4 and large.sum() >= 4
    assert {labels[i] for i in np.flatnonzero(large)} == {"image=512x512x3"}
    assert (col(r, "response_bytes", np.int64)[large] > 512 * 512 * 3).all()
    e2e = col(r, "t_done", np.float64) - col(r, "t_sent", np.float64)
    assert np.median(e2e[large]) > 2 * np.median(e2e[small])
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["config"]["client"]["kind"] == "kserve"


def test_loadgen_run_cli_drives_triton_natively(triton, tmp_path):
    t = triton.info()["triton"]
    cmd = [sys.executable, "-m", "loadgen", "run", "--client", "triton-http",
           "--base-url", t["http"], "--model", t["model"], "--num-prompts", "6",
           "--request-rate", "12", "--random-input-len", "12", "--random-output-len", "5",
           "--ignore-eos", "--result-dir", str(tmp_path), "--run-name", "cli",
           "--no-progress", "--max-send-lag-ms", "250", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-2000:]
    r = load_run(tmp_path / "cli").requests
    assert r.column("status").to_pylist() == ["ok"] * 6
    assert r.column("output_tokens").to_pylist() == [5] * 6


def test_continuous_batching_lets_short_requests_pass_long_ones(tmp_path):
    """--batching continuous, one instance, 4 slots: 2 long requests (200 tokens) and 6 short
    ones (4 tokens) sent at once. In-flight batching streams every short request through the
    free slots while the long ones decode, so all short ones finish before either long one
    does; Triton's dynamic batching (a batch runs to its end) could not do that with 8
    requests in batches of at most 4 on one instance."""
    from arrivals.workload import Workload

    model = cached_tiny_hf("tiny")
    settings = ServeSettings(model=str(model), max_batch_size=4, served_model_name=NAME,
                             log_dir=tmp_path / "logs", startup_timeout_s=240)
    out = np.array([200, 200, 4, 4, 4, 4, 4, 4])
    wl = Workload(t_intended=np.zeros(8), prompts=["the cat sat on the mat"] * 8,
                  input_tokens=np.full(8, 6), output_tokens=out,
                  description={"kind": "test", "seed": 0})
    with launch(TritonRuntime(instances=1, batching="continuous"), settings) as srv:
        t = srv.info()["triton"]
        assert srv.info()["argv"][srv.info()["argv"].index("--batching") + 1] == "continuous"
        client = TritonGrpcClient(TritonConfig(t["grpc"], t["model"], "grpc", ignore_eos=True,
                                               timeout_s=60))
        res = _run(client, wl, tmp_path, "continuous", srv, preflight=False)
    r = load_run(res.run_dir).requests
    assert r.column("status").to_pylist() == ["ok"] * 8
    ids = col(r, "request_id", np.int64)
    assert (col(r, "output_tokens", np.int64) == out[ids]).all()
    done = col(r, "t_done", np.float64)
    long_done = done[out[ids] == 200]
    assert (done[out[ids] == 4] < long_done.min()).all()
