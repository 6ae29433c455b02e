"""llama.cpp runtimes without a server: command lines, binary lookup, version parsing, build args.

The end-to-end tests against a real llama-server are in tests/test_llamacpp_e2e.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadgen.cli import main
from servers.launch import ServeSettings
from servers.llamacpp import build
from servers.llamacpp.runtime import LlamaCppPythonRuntime, LlamaServerRuntime, parse_version

FAKE = Path("/opt/llama/bin/llama-server")


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 'version: 1 (abc)'\n")
    path.chmod(0o755)
    return path


def test_slots_are_the_batch_size_and_context_is_slots_times_per_slot():
    rt = LlamaServerRuntime(binary=FAKE, ctx_per_slot=512)
    argv = rt.command(ServeSettings(model="/m/tiny.gguf", max_batch_size=4), 8123)
    assert argv[0] == str(FAKE)
    assert argv[argv.index("-np") + 1] == "4"
    assert argv[argv.index("-c") + 1] == str(4 * 512)
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "--metrics" in argv


def test_served_name_defaults_to_the_gguf_file_name_and_extra_args_come_last():
    rt = LlamaServerRuntime(binary=FAKE)
    s = ServeSettings(model="/m/tiny-llama.gguf", extra_args=("--flash-attn", "on"))
    argv = rt.command(s, 1)
    assert rt.model_name(s) == "tiny-llama" and argv[argv.index("--alias") + 1] == "tiny-llama"
    assert argv[-2:] == ["--flash-attn", "on"]
    assert argv[argv.index("-np") + 1] == "1"  # no batch size: one slot
    named = ServeSettings(model="/m/x.gguf", served_model_name="llm")
    assert rt.model_name(named) == "llm"


def test_tensor_parallel_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        LlamaServerRuntime(binary=FAKE).command(
            ServeSettings(model="m.gguf", tensor_parallel_size=2), 1)


def test_llama_cpp_python_never_interrupts_running_requests_and_has_no_batch_knob():
    rt = LlamaCppPythonRuntime(python="/usr/bin/python3")
    argv = rt.command(ServeSettings(model="/m/t.gguf"), 9000)
    assert argv[:3] == ["/usr/bin/python3", "-m", "llama_cpp.server"]
    i = argv.index("--interrupt_requests")
    assert argv[i + 1] == "False"
    assert argv[argv.index("--model_alias") + 1] == "t"
    with pytest.raises(ValueError, match="one request at a time"):
        rt.command(ServeSettings(model="/m/t.gguf", max_batch_size=4), 9000)


def test_version_line_of_llama_server_is_parsed():
    out = "version: 7512 (1c2d3e4f)\nbuilt with cc (Debian 12.2.0-14) 12.2.0 for x86_64-linux-gnu\n"
    v = parse_version(out)
    assert v["build"] == 7512 and v["commit"] == "1c2d3e4f" and v["version"] == "b7512 (1c2d3e4f)"
    assert v["built_with"].startswith("cc (Debian")
    assert parse_version("garbage") == {}
    sdist = parse_version("version: 0.5.0-dev (build 1, commit 0c1e570)\nbuilt with GNU 12.2.0")
    assert sdist["commit"] == "0c1e570" and sdist["version"].startswith("0.5.0-dev")


def test_binary_lookup_order_explicit_then_env_then_cache_then_path(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(build.ENV_BINARY, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert build.find_llama_server() is None
    on_path = _exe(tmp_path / "path" / "llama-server")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert build.find_llama_server() == on_path
    cached = _exe(build.cached_binary())
    assert cached == tmp_path / "cache" / "llama.cpp" / build.LLAMA_CPP_PYTHON_VERSION / "bin" / "llama-server"
    assert build.find_llama_server() == cached
    env = _exe(tmp_path / "env" / "llama-server")
    monkeypatch.setenv(build.ENV_BINARY, str(env))
    assert build.find_llama_server() == env
    explicit = _exe(tmp_path / "explicit" / "llama-server")
    assert build.find_llama_server(explicit) == explicit


def test_an_explicit_binary_that_does_not_exist_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADGEN_CACHE_DIR", str(tmp_path))
    _exe(build.cached_binary())
    with pytest.raises(FileNotFoundError, match="--llama-server"):
        build.find_llama_server(tmp_path / "missing")
    monkeypatch.setenv(build.ENV_BINARY, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=build.ENV_BINARY):
        build.find_llama_server()


def test_no_binary_and_no_build_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(build.ENV_BINARY, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="loadgen serve llamacpp --build"):
        build.ensure_llama_server(build=False)


def test_build_is_portable_server_only_and_never_downloads_the_web_ui(tmp_path):
    conf = build.cmake_configure_args(tmp_path / "src", tmp_path / "b", "Ninja")
    assert "-DGGML_NATIVE=OFF" in conf and "-DLLAMA_USE_PREBUILT_UI=OFF" in conf
    assert "-DBUILD_SHARED_LIBS=OFF" in conf and conf[conf.index("-G") + 1] == "Ninja"
    argv = build.cmake_build_args(tmp_path / "b", 2)
    assert argv[argv.index("--target") + 1] == "llama-server" and argv[-2:] == ["-j", "2"]


def test_a_cached_build_is_returned_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADGEN_CACHE_DIR", str(tmp_path))
    cached = _exe(build.cached_binary())

    def no_step(*a, **k):
        raise AssertionError("a build step ran although the binary is cached")

    monkeypatch.setattr(build, "_run_step", no_step)
    assert build.build_llama_server() == cached


def test_serve_llamacpp_without_model_or_build_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "llamacpp"])
    assert e.value.code == 2
    assert "--build" in capsys.readouterr().err


def test_serve_llamacpp_with_a_missing_model_names_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "llamacpp", str(tmp_path / "nope.gguf")])
    assert e.value.code == 2
    assert "nope.gguf" in capsys.readouterr().err


def test_version_of_a_missing_binary_is_reported_unavailable(tmp_path):
    v = LlamaServerRuntime(binary=tmp_path / "gone").version()
    assert "unavailable" in v and os.fspath(tmp_path / "gone") in v["unavailable"]


def test_a_build_step_that_hangs_is_killed_at_the_deadline():
    import time

    t = time.monotonic()
    with pytest.raises(build.BuildError, match="deadline"):
        build._run_step("hang", ["sleep", "30"], time.monotonic() + 0.5, lambda line: None)
    assert time.monotonic() - t < 10


def test_a_failing_build_step_quotes_its_output():
    import time

    with pytest.raises(build.BuildError, match="exit code 3.*boom"):
        build._run_step("fail", ["sh", "-c", "echo boom; exit 3"], time.monotonic() + 30,
                        lambda line: None)
