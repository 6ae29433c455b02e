"""The installers' shared pieces (servers/install_steps.py): echoing a step, explicit paths,
install-info.json."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from servers.install_steps import (
    explicit_executable,
    finished_venv_python,
    install_lock,
    read_install_info,
    run_step,
    write_install_info,
)


class StepFailed(RuntimeError):
    pass


def test_a_step_echoes_what_show_renders_and_error_lines_but_not_compiler_warning_flags():
    code = ("print('[1/3] gcc -Werror=implicit-int -o a.o -c a.c');"
            "print('[2/3] gcc -o b.o -c b.c');"
            "print('b.c:3: error: expected ;')")
    seen: list[str] = []
    out = run_step("compile", [sys.executable, "-c", code], time.monotonic() + 60, seen.append,
                   tag="t", error=StepFailed,
                   show=lambda line: "step 2" if line.startswith("[2/3]") else None)
    assert seen[1:] == ["[t] step 2", "[t] b.c:3: error: expected ;"]  # seen[0]: the command
    assert out.splitlines()[0].startswith("[1/3] gcc -Werror")  # the whole output is returned


def test_a_failed_step_raises_the_callers_error_with_the_output_tail():
    argv = [sys.executable, "-c", "print('ERROR: no wheel'); raise SystemExit(4)"]
    with pytest.raises(StepFailed, match="exit code 4") as e:
        run_step("build", argv, time.monotonic() + 60, lambda _m: None, tag="t",
                 error=StepFailed)
    assert "ERROR: no wheel" in str(e.value)


def test_a_step_gets_the_environment_it_is_given():
    argv = [sys.executable, "-c", "import os; print(os.environ['CMAKE_ARGS'])"]
    out = run_step("env", argv, time.monotonic() + 60, lambda _m: None, tag="t",
                   env={"CMAKE_ARGS": "-DGGML_NATIVE=OFF", "PATH": "/usr/bin:/bin"})
    assert out.strip() == "-DGGML_NATIVE=OFF"


def test_an_explicit_path_wins_and_a_wrong_one_is_an_error_naming_its_source(tmp_path):
    exe = Path(sys.executable)
    assert explicit_executable((("--flag", None), ("$ENV", str(exe))), "hint") == exe
    assert explicit_executable((("--flag", None), ("$ENV", "")), "hint") is None
    with pytest.raises(FileNotFoundError, match=r"--flag .*nope.*give a Python"):
        explicit_executable((("--flag", str(tmp_path / "nope")), ("$ENV", str(exe))),
                            "give a Python")


def test_a_venv_counts_as_installed_only_once_its_install_info_is_written(tmp_path):
    py = tmp_path / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("")
    assert finished_venv_python(tmp_path) is None and read_install_info(tmp_path) == {}
    write_install_info(tmp_path, {"version": "1.0"})
    assert finished_venv_python(tmp_path) == py
    assert read_install_info(tmp_path) == {"version": "1.0"}
    assert not list(tmp_path.glob("*.tmp"))


def test_a_second_install_waits_for_the_first_to_release_the_lock(tmp_path):
    import threading

    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with install_lock(tmp_path / ".install.lock"):
            order.append("first in")
            inside.set()
            time.sleep(0.3)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(10)
    with install_lock(tmp_path / ".install.lock"):
        order.append("second in")
    t.join()
    assert order == ["first in", "first out", "second in"]
