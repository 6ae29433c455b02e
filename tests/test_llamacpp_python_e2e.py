"""The generator against llama-cpp-python's server (``python -m llama_cpp.server``) on 127.0.0.1.

The server runs from the Python that servers/llamacpp/python_install.py finds
($LOADGEN_LLAMA_CPP_PYTHON, else the cached venv); on a machine without one, the fixture builds
the cached venv first (llama-cpp-python[server] 0.3.36 from its sdist: about 10 minutes on 2
cores, once per machine, progress printed, bounded at 40 minutes). A failed build fails the
tests with the build's error. One server serves the module; every load is 8 requests of 16
tokens on the tiny GGUF model.

Exact token counts need two things this server does not offer as options: it has no
``ignore_eos`` (the random model may emit EOS), and it overshoots ``max_tokens`` by up to 3
tokens when the last token is the first byte of a multi-byte UTF-8 character (llama.py's
``multibyte_fix`` loop ``continue``s past the ``max_tokens`` check until the character is
complete). A ``logit_bias`` of -100 on EOS and on the byte tokens <0x80>..<0xFF> rules both out.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from analysis.load import load_run
from analysis.metrics import col
from arrivals.workload import synthetic_workload
from loadgen.clients.openai import ClientConfig
from loadgen.run import RunSpec, execute
from servers.launch import ServeSettings, launch
from servers.llamacpp.python_install import ensure_llama_cpp_python, venv_python
from servers.llamacpp.runtime import LlamaCppPythonRuntime

pytestmark = pytest.mark.e2e
pytest.importorskip("gguf")

INSTALL_TIMEOUT_S = 40 * 60
OUTPUT_LEN = 16
# The tiny GGUF vocabulary (servers/models/gguf_tiny.py): 2 is </s>, 3 + b is the byte <0xb>.
EOS_ID = 2
NON_ASCII_BYTE_IDS = range(3 + 0x80, 3 + 0x100)
EXACT = {"logit_bias": {str(t): -100.0 for t in (EOS_ID, *NON_ASCII_BYTE_IDS)}}


@pytest.fixture(scope="session")
def llama_cpp_python(request) -> Path:
    """The Python with llama-cpp-python[server], installed here (progress on the terminal)."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        t = time.monotonic()
        py = ensure_llama_cpp_python(progress=lambda line: print(line, flush=True),
                                     timeout_s=INSTALL_TIMEOUT_S)
        print(f"\nllama-cpp-python: {py} (ready after {time.monotonic() - t:.1f} s)", flush=True)
    return py


@pytest.fixture(scope="module")
def server(llama_cpp_python, tmp_path_factory):
    from servers.models.gguf_tiny import cached_tiny_gguf

    settings = ServeSettings(model=str(cached_tiny_gguf("tiny")), served_model_name="tiny",
                             log_dir=tmp_path_factory.mktemp("llamacpp-python-logs"),
                             startup_timeout_s=120)
    with launch(LlamaCppPythonRuntime(python=llama_cpp_python), settings) as srv:
        yield srv


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _load(server, tmp_path, name: str, stream: bool, extra_body: dict, seed: int):
    wl = synthetic_workload(num_requests=8, request_rate=8.0, process="constant",
                            input_len=16, output_len=OUTPUT_LEN, seed=seed)
    client = ClientConfig(base_url=server.base_url, model=server.model, stream=stream,
                          extra_body=extra_body)
    res = execute(RunSpec(client=client, workload=wl, result_dir=tmp_path, run_name=name,
                          progress=False, max_send_lag_ms=50.0,
                          extra_manifest={"server_launch": server.info()}))
    return wl, res, load_run(Path(res.run_dir))


def test_overlapping_requests_all_complete_on_the_serialising_server(server, tmp_path):
    info = server.info()
    assert info["runtime"] == "llamacpp-python" and info["version"].get("version")
    argv = info["argv"]
    assert argv[argv.index("--interrupt_requests") + 1] == "False"
    # 8 requests at 8 req/s overlap: with --interrupt_requests True (the server's default)
    # each new one would abort the stream in progress.
    _, _, run = _load(server, tmp_path, "py", stream=False, extra_body={}, seed=3)
    assert run.requests.column("status").to_pylist() == ["ok"] * 8
    assert set(run.requests.column("output_tokens_source").to_pylist()) == {"usage"}
    out = col(run.requests, "output_tokens", np.int64)
    # Without the logit bias (module docstring) a random EOS may stop a request early and a
    # pending multi-byte character may add up to 3 tokens, so only the typical one is 16.
    assert (out >= 1).all() and (out <= OUTPUT_LEN + 3).all() and np.median(out) == OUTPUT_LEN


def test_open_loop_load_has_exact_token_counts_and_the_manifest_names_the_runtime(
        server, tmp_path):
    wl, res, run = _load(server, tmp_path, "exact", stream=False, extra_body=EXACT, seed=5)
    status = run.requests.column("status").to_pylist()
    assert status == ["ok"] * 8, run.requests.column("error").to_pylist()
    assert set(run.requests.column("output_tokens_source").to_pylist()) == {"usage"}
    assert (col(run.requests, "output_tokens", np.int64) == OUTPUT_LEN).all()
    # The prompt counts are the server's tokenizer's: check them against its own endpoint.
    for prompt, n_in in zip(wl.prompts, col(run.requests, "input_tokens", np.int64),
                            strict=True):
        assert n_in == _post(server.base_url + "/extras/tokenize/count",
                             {"model": "tiny", "input": prompt})["count"]
    launched = json.loads((Path(res.run_dir) / "manifest.json").read_text())["server_launch"]
    assert launched["runtime"] == "llamacpp-python" and launched["model"] == "tiny"
    assert launched["version"]["version"] == "0.3.36"
    argv = launched["argv"]
    assert argv[argv.index("--interrupt_requests") + 1] == "False"
    assert argv[argv.index("--n_ctx") + 1] == "2048" and argv[1:3] == ["-m", "llama_cpp.server"]
    if Path(argv[0]).absolute() == venv_python().absolute():  # our cached build (CI)
        built = launched["version"]["install_info"]
        assert "-DGGML_NATIVE=OFF" in built["cmake_args"]
        assert any(line.startswith("llama_cpp_python") and "0.3.36" in line
                   for line in built["freeze"])


def test_streamed_responses_carry_one_token_per_chunk_when_every_token_is_ascii(
        server, tmp_path):
    # This server's streams have no usage; the generator counts chunks. With EOS, the
    # non-ASCII bytes and the empty-text tokens <unk> and <s> ruled out, each token is one
    # chunk of text, so the counts are exact here (not in general: docs/servers.md).
    bias = {"logit_bias": {**EXACT["logit_bias"], "0": -100.0, "1": -100.0}}
    _, _, run = _load(server, tmp_path, "stream", stream=True, extra_body=bias, seed=6)
    assert run.requests.column("status").to_pylist() == ["ok"] * 8
    assert set(run.requests.column("output_tokens_source").to_pylist()) == {"chunks"}
    assert (col(run.requests, "output_tokens", np.int64) == OUTPUT_LEN).all()
