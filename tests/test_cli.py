"""The command line as a user meets it: bad flags, preflight errors, Ctrl-C, re-summarising."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

LOADGEN = [sys.executable, "-m", "loadgen"]


def _wait_for_run_start(run_dir: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until the run directory's manifest exists (imports and preflight are done)."""
    deadline = time.monotonic() + timeout
    while not (run_dir / "manifest.json").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "run did not start"
        time.sleep(0.05)


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*LOADGEN, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--request-rate", "-1"], "--request-rate must be a number > 0"),
        (["--request-rate", "nan"], "--request-rate must be a number > 0"),
        (["--num-prompts", "0"], "--num-prompts must be >= 1"),
        (["--endpoint", "/v1/embeddings"], "--endpoint '/v1/embeddings' is not supported"),
        (["--random-range-ratio", "1.5"], "--random-range-ratio must be in [0, 1)"),
        (["--base-url", "ftp://x"], "--base-url must start with http:// or https://"),
        (["--extra-body", "[1]"], "--extra-body must be a JSON object"),
    ],
)
def test_bad_flags_get_a_one_line_error_naming_the_flag(args, needle, tmp_path):
    p = _run("run", "--model", "m", "--result-dir", str(tmp_path), *args)
    assert p.returncode == 2
    assert needle in p.stderr
    assert "Traceback" not in p.stderr


def test_unreachable_server_fails_before_the_run(tmp_path):
    p = _run("run", "--base-url", "http://127.0.0.1:9", "--model", "m", "--result-dir", str(tmp_path))
    assert p.returncode == 1
    assert "preflight failed: cannot connect to http://127.0.0.1:9" in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_wrong_model_fails_before_the_run(start_sim, tmp_path):
    srv = start_sim()
    p = _run("run", "--base-url", srv.base_url, "--model", "gpt-9", "--result-dir", str(tmp_path))
    assert p.returncode == 1
    assert "model 'gpt-9' is not served" in p.stderr and "sim-llm" in p.stderr


@pytest.mark.e2e
def test_sigint_leaves_a_readable_partial_run(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "5")
    proc = subprocess.Popen(
        [*LOADGEN, "run", "--base-url", srv.base_url, "--model", "sim-llm", "--request-rate", "20",
         "--num-prompts", "400", "--random-input-len", "10", "--random-output-len", "60",
         "--result-dir", str(tmp_path), "--run-name", "cut", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_for_run_start(tmp_path / "cut", proc)
    time.sleep(2.0)  # ~40 requests sent, each ~0.5 s long: several in flight
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    run_dir = tmp_path / "cut"
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert manifest["status"] == "partial" and manifest["interrupted_by"] == "SIGINT"
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    by = summary["counts"]["by_status"]
    assert summary["validity"]["verdict"] == "PARTIAL"
    assert by.get("cancelled", 0) >= 3 and by.get("ok", 0) >= 5
    assert summary["counts"]["intended"] == 400 and summary["counts"]["recorded"] < 400
    assert "PARTIAL" in out
    # ... and it can be summarised again later
    p = _run("summary", str(run_dir), "--json")
    assert p.returncode == 130
    assert orjson.loads(p.stdout)["counts"]["by_status"] == by


@pytest.mark.e2e
def test_run_prints_a_table_and_writes_the_run_directory(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "2")
    p = _run("run", "--base-url", srv.base_url + "/v1", "--backend", "openai-chat", "--model", "sim-llm",
             "--request-rate", "20", "--num-prompts", "20", "--random-input-len", "32",
             "--random-output-len", "8", "--result-dir", str(tmp_path), "--run-name", "r1",
             "--result-filename", "vllm.json", "--ignore-eos")
    assert p.returncode == 0, p.stderr
    assert "== VALID ==" in p.stdout and "TTFT from intended" in p.stdout
    run_dir = tmp_path / "r1"
    assert {f.name for f in run_dir.iterdir()} >= {"manifest.json", "requests.parquet",
                                                     "timeseries.parquet", "summary.json", "summary.txt"}
    m = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert m["status"] == "complete"
    assert m["config"]["client"]["endpoint"] == "/v1/chat/completions"
    assert m["workload"]["num_requests"] == 20 and m["seeds"]["workload"] == 0
    assert m["tool"]["name"] == "llm-loadgen" and "environment" in m
    v = orjson.loads((tmp_path / "vllm.json").read_bytes())
    assert v["completed"] == 20 and v["total_output_tokens"] == 160


def test_api_key_is_never_written(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "1")
    p = _run("run", "--base-url", srv.base_url, "--model", "sim-llm", "--request-rate", "50",
             "--num-prompts", "3", "--random-input-len", "4", "--random-output-len", "2",
             "--api-key", "sk-SECRET123", "--header", "X-Api-Key=SECRET456", "--header", "X-Team: a",
             "--result-dir", str(tmp_path), "--run-name", "k")
    assert p.returncode == 0, p.stderr
    for f in (tmp_path / "k").iterdir():
        data = f.read_bytes()
        assert b"SECRET123" not in data and b"SECRET456" not in data, f.name
    m = orjson.loads((tmp_path / "k" / "manifest.json").read_bytes())
    assert m["config"]["client"]["headers"] == {"X-Api-Key": "<redacted>", "X-Team": "a"}


def test_serve_sim_starts_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen([*LOADGEN, "serve", "sim", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "sim server listening on http://127.0.0.1:" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_summary_of_a_missing_directory_is_a_clear_error(tmp_path):
    p = _run("summary", str(tmp_path / "nope"))
    assert p.returncode == 1 and "not a run directory" in p.stderr


def test_help_explains_the_flags():
    p = _run("run", "--help")
    assert p.returncode == 0
    for flag in ("--base-url", "--model", "--endpoint", "--num-prompts", "--request-rate",
                 "--burstiness", "--max-concurrency", "--seed", "--ignore-eos", "--result-dir"):
        assert flag in p.stdout
    assert "CLOSED LOOP" in p.stdout




@pytest.mark.e2e
def test_sigterm_also_saves_a_partial_run(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "5")
    proc = subprocess.Popen(
        [*LOADGEN, "run", "--base-url", srv.base_url, "--model", "sim-llm", "--request-rate", "20",
         "--num-prompts", "400", "--random-input-len", "10", "--random-output-len", "60",
         "--result-dir", str(tmp_path), "--run-name", "term", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_for_run_start(tmp_path / "term", proc)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    m = orjson.loads((tmp_path / "term" / "manifest.json").read_bytes())
    assert m["status"] == "partial" and m["interrupted_by"] == "SIGTERM"
    assert (tmp_path / "term" / "summary.json").exists()


@pytest.mark.e2e
def test_an_invalid_run_says_so_in_the_table_and_the_exit_code(start_sim, tmp_path):
    # A threshold no event loop can meet (1 microsecond) makes the self-check fail.
    srv = start_sim("--step-base-ms", "1")
    p = _run("run", "--base-url", srv.base_url, "--model", "sim-llm", "--request-rate", "50",
             "--num-prompts", "20", "--random-input-len", "4", "--random-output-len", "2",
             "--max-send-lag-ms", "0.001", "--result-dir", str(tmp_path), "--run-name", "inv")
    assert p.returncode == 3
    assert "== INVALID ==" in p.stdout and "generator fell behind its schedule" in p.stdout
    s = orjson.loads((tmp_path / "inv" / "summary.json").read_bytes())
    assert s["validity"]["valid"] is False
