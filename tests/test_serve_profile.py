"""`loadgen serve RUNTIME --profile perf|nsys`, `loadgen run --server-info FILE` and
`loadgen profile attach RUN_DIR`: the flags on every runtime, the missing-tool message, the
launched command lines, and a real perf trace of the sim kept in a run directory.

perf comes from the ``perf_tool`` fixture (tests/conftest.py). nsys is never run here (no GPU,
no Nsight Systems): only its missing-tool message and command line (tests/test_telemetry_profiling.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadgen.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def serve_argv(runtime: str, tmp_path: Path) -> list[str]:
    """A ``loadgen serve RUNTIME`` command line that gets as far as the profile check."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    return {
        "sim": ["serve", "sim"],
        "llamacpp": ["serve", "llamacpp", str(model), "--llama-server", str(tmp_path / "none")],
        "llamacpp-python": ["serve", "llamacpp-python", str(model)],
        "pytorch": ["serve", "pytorch", "--model", str(tmp_path)],
        "vllm": ["serve", "vllm", "org/some-model", "--no-auto-install"],
        "triton": ["serve", "triton", str(tmp_path)],
    }[runtime]


@pytest.mark.parametrize("runtime", ["sim", "llamacpp", "llamacpp-python", "pytorch", "vllm",
                                     "triton"])
def test_every_serve_runtime_names_a_missing_perf_and_how_to_install_it(
        runtime, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SystemExit) as e:
        main([*serve_argv(runtime, tmp_path), "--profile", "perf"])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "--profile perf: profiler 'perf' not found on PATH" in err
    assert "apt-get install linux-perf" in err
    assert not (tmp_path / "results").exists()  # nothing was started or built


def test_serve_with_a_missing_nsys_names_nsight_systems(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SystemExit) as e:
        main(["serve", "sim", "--profile", "nsys"])
    assert e.value.code == 2
    assert "profiler 'nsys' not found on PATH: install NVIDIA Nsight Systems" in \
        capsys.readouterr().err


def test_profile_dir_without_profile_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "sim", "--profile-dir", str(tmp_path)])
    assert e.value.code == 2
    assert "--profile-dir needs --profile perf or --profile nsys" in capsys.readouterr().err


def test_serve_sim_as_a_child_passes_every_flag_to_the_server(tmp_path):
    from servers.sim.cli import add_arguments, config_from_args, launch_settings

    ns = build_parser().parse_args(
        ["serve", "sim", "--port", "0", "--model", "m1", "--max-batch-size", "3",
         "--step-base-ms", "2.5", "--seed", "7", "--fault-rate", "0.25", "--fault-kind",
         "http429", "--stream-interval", "2", "--info-json", str(tmp_path / "i.json")])
    runtime, settings = launch_settings(ns)
    argv = runtime.command(settings, 4321)
    assert argv[1:3] == ["-m", "servers.sim"]
    p = argparse.ArgumentParser()
    add_arguments(p)
    child = config_from_args(p.parse_args(argv[3:]))
    ns.port = 4321
    assert child == config_from_args(ns)


def test_serve_pytorch_as_a_child_passes_every_flag_to_the_server(tmp_path):
    from servers.pytorch.cli import FLAGS, add_arguments, launch_settings

    flags = ["--model", str(tmp_path), "--served-model-name", "tiny", "--port", "0",
             "--max-batch-size", "3", "--batching", "static", "--threads", "1",
             "--dtype", "bfloat16", "--device", "cpu", "--max-model-len", "256"]
    ns = build_parser().parse_args(["serve", "pytorch", *flags, "--info-json", "i.json"])
    runtime, settings = launch_settings(ns)
    argv = runtime.command(settings, 4321)
    assert argv[1:3] == ["-m", "servers.pytorch"]
    p = argparse.ArgumentParser()
    add_arguments(p)
    child = p.parse_args(argv[3:])
    assert {k: getattr(child, k) for k in FLAGS} == {**{k: getattr(ns, k) for k in FLAGS},
                                                     "port": 4321}


def test_run_with_a_file_that_is_not_server_info_is_a_usage_error(tmp_path, capsys):
    f = tmp_path / "x.json"
    f.write_text('{"model": "m"}')
    with pytest.raises(SystemExit) as e:
        main(["run", "--server-info", str(f), "--model", "m", "--num-prompts", "1"])
    assert e.value.code == 2
    assert "is not a server info file (no runtime, argv, base_url)" in capsys.readouterr().err


def test_attach_refuses_a_profile_directory_reused_by_another_server_start(tmp_path):
    from loadgen.telemetry.profile_attach import attach_profile
    from loadgen.telemetry.profiling import write_done

    src = tmp_path / "prof"
    src.mkdir()
    (src / "perf.data").write_bytes(b"x" * 10)
    write_done(src, "perf", started_unix=2000.0, exit_code=0, server_argv=["s"], log="l")
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"server_launch": {"profile": {
        "tool": "perf", "dir": str(src), "started_unix": 1000.0}}}))
    with pytest.raises(ValueError, match="holds the profile of another server start"):
        attach_profile(run)
    assert not (run / "profile").exists()


def test_attach_says_a_run_without_a_profiled_server_has_none(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"server_launch": {"runtime": "sim"}}))
    assert main(["profile", "attach", str(run)]) == 1
    assert "names no server profile" in capsys.readouterr().err


def _wait_json(path: Path, proc: subprocess.Popen, timeout_s: float) -> dict:
    t = time.monotonic() + timeout_s
    while time.monotonic() < t:
        if proc.poll() is not None:
            raise AssertionError(f"loadgen serve exited with {proc.returncode}")
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):  # not written (completely) yet
            time.sleep(0.1)
    raise AssertionError(f"{path} not written in {timeout_s:g} s")


def _loadgen(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "loadgen", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.mark.e2e
def test_a_run_against_a_profiled_sim_keeps_the_perf_trace_after_the_server_stops(
        tmp_path, perf_tool):
    info_json, pdir, run = tmp_path / "server.json", tmp_path / "prof", tmp_path / "res" / "r"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    serve = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "serve", "sim", "--port", "0", "--step-base-ms", "1",
         "--profile", "perf", "--profile-dir", str(pdir), "--info-json", str(info_json),
         "--log-dir", str(tmp_path / "logs")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        info = _wait_json(info_json, serve, 60)
        assert info["runtime"] == "sim" and info["argv"][:2] == [perf_tool, "record"]
        assert info["profile"]["server_argv"][1:3] == ["-m", "servers.sim"]
        assert "--step-base-ms" in info["profile"]["server_argv"]

        r = _loadgen("run", "--server-info", str(info_json), "--model", "sim-llm",
                     "--num-prompts", "12", "--request-rate", "20", "--max-send-lag-ms", "1000",
                     "--result-dir", str(tmp_path / "res"), "--run-name", "r", "--no-progress")
        assert r.returncode == 0, r.stderr[-2000:]
        launch = json.loads((run / "manifest.json").read_text())["server_launch"]
        assert launch["argv"] == info["argv"] and launch["base_url"] == info["base_url"]
        assert launch["profile"]["files"] == [] and launch["profile"]["complete"] is False
        assert f"loadgen profile attach {run}" in r.stderr

        r = _loadgen("profile", "attach", str(run))
        assert r.returncode == 1 and "is not complete yet" in r.stderr  # the server still runs

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=120) == 0
    finally:
        if serve.poll() is None:
            serve.terminate()
            serve.wait(timeout=130)
    r = _loadgen("profile", "attach", str(run))
    assert r.returncode == 0, r.stderr
    m = json.loads((run / "manifest.json").read_text())
    prof = m["server_launch"]["profile"]
    kept = run / "profile" / "perf.data"
    assert prof["files"] == ["profile/perf.data"] and prof["complete"] is True
    assert prof["attached"]["files"][0]["bytes"] == kept.stat().st_size > 0
    assert kept.stat().st_ino == (pdir / "perf.data").stat().st_ino  # a hard link, no copy
    cov = prof["covers"]
    assert cov["server_started_unix"] < m["clock"]["t0_unix"] < cov["server_stopped_unix"]
    r = subprocess.run([perf_tool, "script", "-i", str(kept), "-F", "comm"],
                       capture_output=True, text=True, timeout=120)
    comms = r.stdout.split()  # the samples are the server's (python), not perf's own
    assert r.returncode == 0 and sum(c.startswith("python") for c in comms) > 0.5 * len(comms)
