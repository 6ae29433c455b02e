"""The generator against llama-cpp-python's server (``python -m llama_cpp.server``) on 127.0.0.1.

The server runs from the Python that servers/llamacpp/python_install.py finds
($LOADGEN_LLAMA_CPP_PYTHON, else the cached venv); on a machine without one, the fixture builds
the cached venv first (llama-cpp-python[server] 0.3.36 from its sdist: about 10 minutes on 2
cores, once per machine, progress printed, bounded at 40 minutes). A failed build fails the
tests with the build's error. One server serves the module; every load is 8 requests of 16
tokens on the tiny GGUF model.

Exact token counts need what this server does not offer as options: it has no ``ignore_eos``
(the random model may emit EOS), and it overshoots ``max_tokens`` while its text ends in an
incomplete UTF-8 character (llama.py's ``multibyte_fix`` ``continue``s past the ``max_tokens``
check; seen here: 8 of 40 requests for 16 tokens got 17 to 20). A ``logit_bias`` of -100 on
EOS and on the byte tokens <0x80>..<0xFF> rules both out.
"""

from __future__ import annotations

import json
import subprocess
import sys
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
from tests.serve_child import serve_child, stop_and_check_gone, wait_for_info

pytestmark = pytest.mark.e2e
pytest.importorskip("gguf")

INSTALL_TIMEOUT_S = 40 * 60
OUTPUT_LEN = 16
# The tiny GGUF vocabulary (servers/models/gguf_tiny.py): 2 is </s>, 3 + b is the byte <0xb>.
EOS_ID = 2
NON_ASCII_BYTE_IDS = range(3 + 0x80, 3 + 0x100)
EXACT = {"logit_bias": {str(t): -100.0 for t in (EOS_ID, *NON_ASCII_BYTE_IDS)}}
# Streams: also no <unk> (0) and <s> (1), whose text is empty, so that every token is a chunk.
ASCII_ONLY = {"logit_bias": {**EXACT["logit_bias"], "0": -100.0, "1": -100.0}}


@pytest.fixture(scope="session")
def llama_cpp_python(shown_install) -> Path:
    """The Python with llama-cpp-python[server], installed here (progress on the terminal)."""
    return shown_install("llama-cpp-python", ensure_llama_cpp_python,
                         timeout_s=INSTALL_TIMEOUT_S)


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


def _load(server, tmp_path, name: str, stream: bool, extra_body: dict, seed: int,
          rate: float = 8.0):
    wl = synthetic_workload(num_requests=8, request_rate=rate, process="constant",
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
    # 8 streams 5 ms apart overlap (the server takes longer than that for one). With
    # --interrupt_requests True (the server's default) each new one would cut the stream in
    # progress short, and cleanly: "[DONE]" after 1 token, so only the counts show it.
    _, _, run = _load(server, tmp_path, "overlap", stream=True, extra_body=ASCII_ONLY, seed=3,
                      rate=200.0)
    assert run.requests.column("status").to_pylist() == ["ok"] * 8
    sent, done = col(run.requests, "t_sent"), col(run.requests, "t_done")
    order = np.argsort(sent)
    assert (sent[order][1:] < done[order][:-1]).any()  # the load did overlap
    # This server's streams carry no usage: the generator counts chunks, one per token here
    # (every token is non-empty ASCII text).
    assert set(run.requests.column("output_tokens_source").to_pylist()) == {"chunks"}
    assert (col(run.requests, "output_tokens", np.int64) == OUTPUT_LEN).all()


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


def test_serve_install_flag_prints_the_python_it_finds(llama_cpp_python):
    p = subprocess.run([sys.executable, "-m", "loadgen", "serve", "llamacpp-python",
                        "--install"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(llama_cpp_python)
    assert json.loads(p.stderr)["version"] == "0.3.36"


def test_serve_command_finds_the_installation_and_stops_the_group_on_sigterm(
        llama_cpp_python, tmp_path):
    from servers.models.gguf_tiny import cached_tiny_gguf

    info_path = tmp_path / "info.json"
    with serve_child("serve", "llamacpp-python", str(cached_tiny_gguf("tiny")),
                     "--served-model-name", "tiny", "--no-auto-install", "--info-json",
                     str(info_path), "--log-dir", str(tmp_path), "--server-arg=--n_threads",
                     "--server-arg=1") as proc:
        info = wait_for_info(proc, info_path, 120)
        assert info["runtime"] == "llamacpp-python" and info["argv"][0] == str(llama_cpp_python)
        assert info["argv"][-2:] == ["--n_threads", "1"]
        with urllib.request.urlopen(info["base_url"] + "/v1/models", timeout=10) as r:
            assert [m["id"] for m in json.loads(r.read())["data"]] == ["tiny"]
        stop_and_check_gone(proc, info["pid"], 60)  # the server's whole group too
