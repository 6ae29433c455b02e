"""llama-cpp-python's cached venv without building it: lookup order, build flags, progress,
and the runtime and CLI when it is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from loadgen.cli import main
from servers.launch import ServeSettings
from servers.llamacpp import python_install as pi
from servers.llamacpp.runtime import LlamaCppPythonRuntime

VERSION = pi.LLAMA_CPP_PYTHON_VERSION


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LOADGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(pi.ENV_PYTHON, raising=False)
    monkeypatch.setattr(pi, "_this_python_has_server", lambda: False)
    return tmp_path


def _fake_install(root: Path, finished: bool) -> Path:
    py = root / f"llama-cpp-python-{VERSION}" / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("#!/bin/sh\n")
    py.chmod(0o755)
    if finished:
        (py.parents[2] / "install-info.json").write_text(json.dumps({"version": VERSION}))
    return py


def test_lookup_order_is_explicit_then_environment_then_cached_venv_then_this_python(
        empty_cache, monkeypatch):
    assert pi.find_llama_cpp_python() is None
    monkeypatch.setattr(pi, "_this_python_has_server", lambda: True)
    assert pi.find_llama_cpp_python() == Path(sys.executable)
    cached = _fake_install(empty_cache, finished=True)
    assert pi.find_llama_cpp_python() == cached
    monkeypatch.setenv(pi.ENV_PYTHON, sys.executable)
    assert pi.find_llama_cpp_python() == Path(sys.executable)
    assert pi.find_llama_cpp_python(explicit=str(cached)) == cached


def test_an_unfinished_venv_is_not_used_and_ensure_without_install_says_what_to_do(
        empty_cache):
    _fake_install(empty_cache, finished=False)
    assert pi.find_llama_cpp_python() is None
    with pytest.raises(FileNotFoundError, match="loadgen serve llamacpp-python --install"):
        pi.ensure_llama_cpp_python(install=False)


def test_a_wrong_environment_python_is_an_error_not_a_fallback(empty_cache, monkeypatch):
    _fake_install(empty_cache, finished=True)
    monkeypatch.setenv(pi.ENV_PYTHON, str(empty_cache / "nope"))
    with pytest.raises(FileNotFoundError, match=pi.ENV_PYTHON):
        pi.find_llama_cpp_python()


def test_a_finished_install_is_returned_without_running_a_step(empty_cache, monkeypatch):
    cached = _fake_install(empty_cache, finished=True)

    def no_step(*a, **k):
        raise AssertionError("an install step ran although the venv is cached")

    monkeypatch.setattr(pi, "run_step", no_step)
    assert pi.install_llama_cpp_python() == cached


def test_the_wheel_is_built_from_the_pinned_sdist_with_portable_flags_never_from_a_cache():
    argv = pi.wheel_args(Path("/v/bin/python"), Path("/w"))
    assert argv[:4] == ["/v/bin/python", "-m", "pip", "wheel"]
    assert argv[-1] == f"llama-cpp-python=={VERSION}" and VERSION == "0.3.36"
    assert argv[argv.index("--no-binary") + 1] == "llama-cpp-python"
    assert "--no-cache-dir" in argv and "--no-deps" in argv  # no stale wheel of other flags
    env = pi.pip_env(jobs=3)
    flags = env["CMAKE_ARGS"].split()
    assert "-DGGML_NATIVE=OFF" in flags and "-DLLAVA_BUILD=OFF" in flags
    assert env["CMAKE_BUILD_PARALLEL_LEVEL"] == "3" and env["MAKEFLAGS"] == "-j3"
    inst = pi.install_args(Path("/v/bin/python"), Path("/w/x.whl"))
    assert inst[-1] == "/w/x.whl[server]"


def test_build_progress_shows_every_tenth_compile_step_by_object_name_and_the_last():
    line = ("  [20/140] /usr/bin/c++ -O3 -Werror=implicit-int -o vendor/llama.cpp/src/"
            "CMakeFiles/llama.dir/llama-model.cpp.o -c /tmp/x/llama-model.cpp")
    assert pi.build_progress(line) == "[20/140] llama-model.cpp.o"
    assert pi.build_progress(line.replace("[20/140]", "[21/140]")) is None
    assert pi.build_progress(line.replace("[20/140]", "[140/140]")).startswith("[140/140]")
    assert pi.build_progress("  Building wheel for llama-cpp-python") is not None
    assert pi.build_progress("-- Found Threads: TRUE") is None


def test_the_runtime_without_an_installation_is_unavailable_and_says_how_to_install(
        empty_cache):
    rt = LlamaCppPythonRuntime()
    assert "--install" in rt.version()["unavailable"]
    with pytest.raises(FileNotFoundError, match="loadgen serve llamacpp-python --install"):
        rt.command(ServeSettings(model="/m/t.gguf"), 9000)


def test_the_runtime_reports_the_install_info_of_the_cached_venv(empty_cache):
    py = _fake_install(empty_cache, finished=True)
    py.write_text(f"#!/bin/sh\necho {VERSION}\n")  # stands in for `python -c ...`
    v = LlamaCppPythonRuntime().version()
    assert v["version"] == VERSION and v["install_info"] == {"version": VERSION}


def test_serve_llamacpp_python_without_model_or_install_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "llamacpp-python"])
    assert e.value.code == 2 and "--install" in capsys.readouterr().err


def test_serve_llamacpp_python_with_no_auto_install_fails_saying_what_to_do(empty_cache,
                                                                            tmp_path, capsys):
    model = tmp_path / "t.gguf"
    model.write_bytes(b"GGUF")
    assert main(["serve", "llamacpp-python", str(model), "--no-auto-install"]) == 1
    assert "loadgen serve llamacpp-python --install" in capsys.readouterr().err
