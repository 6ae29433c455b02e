"""Find or install llama-cpp-python's server in a dedicated virtual environment, cached per machine.

PyPI has only the llama-cpp-python sdist (the same pinned version whose vendored llama.cpp
servers/llamacpp/build.py builds ``llama-server`` from), so installing it compiles llama.cpp
as shared libraries. We do that once per machine, into
``$LOADGEN_CACHE_DIR/llama-cpp-python-<version>/venv`` (default cache ``~/.cache/llm-loadgen``),
never into the project's own environment:

1. ``python -m venv`` with the running Python;
2. ``pip wheel --no-deps --no-binary llama-cpp-python --no-cache-dir llama-cpp-python==<v>``:
   the sdist, built by scikit-build-core with ``CMAKE_ARGS`` (``CMAKE_FLAGS`` below) and
   ``CMAKE_BUILD_PARALLEL_LEVEL`` = the CPU count (``--no-cache-dir``: pip's wheel cache could
   otherwise hand back a wheel built earlier with other flags, e.g. ``-march=native``);
3. ``pip install WHEEL[server]``: uvicorn, fastapi, pydantic-settings, sse-starlette, ...;
4. ``import llama_cpp.server.app`` in the venv (the shared libraries load) and its version;
5. ``pip freeze``, the flags and the timings go into ``install-info.json`` beside the venv,
   written last: a venv without it is an unfinished install and is rebuilt.

The CMake flags keep the libraries portable and the build short:

- ``-DGGML_NATIVE=OFF``: no ``-march=native``; ggml targets AVX2/FMA/F16C (x86-64-v3), so a
  cached venv runs on any CI machine of that class, not only on the CPU that built it;
- ``-DLLAVA_BUILD=OFF``: no ``libmtmd`` (multimodal projectors), which llama-cpp-python imports
  only for its vision/audio chat handlers; text models never load it;
- ``-DLLAMA_OPENSSL=OFF``: the bundled ``common`` library without HTTPS model downloads (and
  without a libssl dependency);
- ``-DLLAMA_BUILD_TESTS/EXAMPLES/TOOLS/SERVER=OFF``: already the default when llama.cpp is a
  sub-project, as here; explicit so that no web UI download or extra binary can creep in.
  (``LLAMA_CURL`` is forced off by llama-cpp-python's own CMakeLists.)

Which Python runs the server, first match wins: ``--python PATH`` > ``$LOADGEN_LLAMA_CPP_PYTHON``
> the cached venv > the running interpreter if it can import ``llama_cpp.server`` > install
(a file lock makes a concurrent second install wait for the first).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from servers.install_steps import (
    Progress,
    dir_bytes,
    explicit_executable,
    finished_venv_python,
    install_lock,
    read_install_info,
    run_step,
    write_install_info,
)
from servers.llamacpp.build import LLAMA_CPP_PYTHON_VERSION
from servers.models.gguf_tiny import cache_dir

ENV_PYTHON = "LOADGEN_LLAMA_CPP_PYTHON"
DISTRIBUTION = "llama-cpp-python"
TAG = "llama-cpp-python install"

CMAKE_FLAGS: tuple[str, ...] = (
    "-DGGML_NATIVE=OFF",
    "-DLLAVA_BUILD=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
)

# ninja's "[12/140] /usr/bin/c++ ... -o OBJECT -c SOURCE" lines
NINJA_STEP = re.compile(r"^\s*\[(\d+)/(\d+)\]")
OUTPUT_FILE = re.compile(r"\s-o\s+(\S+)")


class InstallError(RuntimeError):
    """Installing llama-cpp-python failed; the message names the step and quotes its output."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def install_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    return cache_dir() / f"llama-cpp-python-{version}"


def venv_python(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """Where the cached venv's interpreter is (or will be)."""
    return install_dir(version) / "venv" / "bin" / "python"


def install_info(version: str = LLAMA_CPP_PYTHON_VERSION) -> dict:
    """The ``install-info.json`` of the cached install ({} if there is none)."""
    return read_install_info(install_dir(version))


def cached_python(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path | None:
    """The cached venv's Python if its install finished (install-info.json written), else None."""
    return finished_venv_python(install_dir(version))


def _this_python_has_server() -> bool:
    """Whether the running interpreter has llama_cpp.server (finding a submodule imports
    ``llama_cpp`` itself, which loads its libraries: a broken install counts as none)."""
    try:
        return (importlib.util.find_spec("llama_cpp") is not None
                and importlib.util.find_spec("llama_cpp.server") is not None)
    except Exception:  # noqa: BLE001 - any import failure means: not usable here
        return False


def find_llama_cpp_python(explicit: str | os.PathLike | None = None,
                          version: str = LLAMA_CPP_PYTHON_VERSION) -> Path | None:
    """The Python to run ``llama_cpp.server`` with (module docstring for the order), or None.

    An explicit path or $LOADGEN_LLAMA_CPP_PYTHON that is not an executable file is an error (the
    user asked for it), not a reason to fall back silently to another installation.
    """
    given = explicit_executable(
        (("--python", explicit), (ENV_PYTHON, os.environ.get(ENV_PYTHON))),
        "give the path of a Python that has llama-cpp-python[server]")
    cached = given or cached_python(version)
    if cached is not None:
        return cached
    return Path(sys.executable) if _this_python_has_server() else None


def pip_env(jobs: int) -> dict[str, str]:
    """The environment of the pip steps: our CMake flags, one compile job per core, no
    progress bars or version checks."""
    return {**os.environ, "CMAKE_ARGS": " ".join(CMAKE_FLAGS),
            "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs), "MAKEFLAGS": f"-j{jobs}",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_PROGRESS_BAR": "off"}


def wheel_args(python: Path, wheel_dir: Path, version: str = LLAMA_CPP_PYTHON_VERSION,
               ) -> list[str]:
    """The pip command that builds the wheel from the sdist (``-v``: the compile's output,
    for progress and for the error tail)."""
    return [str(python), "-m", "pip", "wheel", "--no-input", "--no-deps", "--no-cache-dir",
            "--no-binary", DISTRIBUTION, "-v", "-w", str(wheel_dir), f"{DISTRIBUTION}=={version}"]


def install_args(python: Path, wheel: Path) -> list[str]:
    """The pip command that installs the built wheel with the server's dependencies."""
    return [str(python), "-m", "pip", "install", "--no-input", f"{wheel}[server]"]


PIP_LINES = ("Collecting", "Successfully", "ERROR", "Building wheel", "Created wheel", "*** ",
             "-- Configuring done", "-- Adding CPU backend")


def build_progress(line: str, every: int = 10) -> str | None:
    """What to echo of a line of the verbose wheel build: pip's and CMake's few status lines,
    and every ``every``-th ninja step as ``[n/N] OBJECT`` (how far the compile is), or None."""
    m = NINJA_STEP.match(line)
    if m:
        n, total = int(m.group(1)), int(m.group(2))
        if n % every and n != total:
            return None
        out = OUTPUT_FILE.search(line)
        return f"[{n}/{total}] {Path(out.group(1)).name if out else line.strip()[:120]}"
    stripped = line.strip()
    return stripped if stripped.startswith(PIP_LINES) else None


def _pip_line(line: str) -> str | None:
    return line if line.startswith(("Collecting", "Successfully", "ERROR")) else None


VERSION_CODE = """\
import json, sys
import llama_cpp, llama_cpp.server.app
from importlib import metadata as m
print(json.dumps({"version": llama_cpp.__version__,
                  "distribution_version": m.version("llama_cpp_python"),
                  "python": sys.version.split()[0], "executable": sys.executable,
                  "system_info": llama_cpp.llama_print_system_info().decode(errors="replace")}))
"""
"""Printed by the venv's Python: the version, and llama.cpp's system info (the CPU features
it was compiled for); importing llama_cpp.server.app loads the shared libraries."""


def install_llama_cpp_python(version: str = LLAMA_CPP_PYTHON_VERSION, timeout_s: float = 2400.0,
                             progress: Progress = _stderr, base_python: str = sys.executable,
                             jobs: int | None = None) -> Path:
    """Create the cached venv with llama-cpp-python[server] ``version`` built from its sdist
    (module docstring); return its Python.

    Safe against a concurrent install of the same version (a file lock: the second waits,
    then finds the finished venv). A venv left unfinished by an interrupted install is removed
    and built again.
    """
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise InstallError(f"building llama-cpp-python needs {tool!r} on PATH (e.g. apt-get "
                               "install cmake g++); or pass --python PATH of a Python that has "
                               "llama-cpp-python[server] (or set $LOADGEN_LLAMA_CPP_PYTHON)")
    vdir = install_dir(version)
    vdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    jobs = jobs or os.cpu_count() or 2
    env = pip_env(jobs)
    with install_lock(vdir / ".install.lock"):
        done = cached_python(version)
        if done is not None:
            return done
        t0 = time.monotonic()
        venv, work = vdir / "venv", vdir / "work"
        for stale in (venv, work):
            if stale.exists():
                progress(f"[{TAG}] removing the unfinished {stale}")
                shutil.rmtree(stale)
        progress(f"[{TAG}] creating {venv} ({DISTRIBUTION}[server] {version} compiled from its "
                 f"sdist with -j{jobs}: about 10 minutes on 2 cores, once per machine)")
        run_step("create venv", [base_python, "-m", "venv", str(venv)], deadline, progress,
                 tag=TAG, error=InstallError)
        py = venv / "bin" / "python"
        steps: dict[str, float] = {}
        t = time.monotonic()
        run_step(f"build {DISTRIBUTION} {version} from its sdist", wheel_args(py, work, version),
                 deadline, progress, tag=TAG, error=InstallError, show=build_progress, env=env)
        steps["build wheel"] = round(time.monotonic() - t, 1)
        wheels = sorted(work.glob("llama_cpp_python-*.whl"))
        if len(wheels) != 1:
            raise InstallError(f"pip wheel left {[w.name for w in wheels]} in {work}, expected "
                               "one llama_cpp_python wheel")
        wheel_bytes = wheels[0].stat().st_size
        t = time.monotonic()
        run_step("install it with the [server] extra", install_args(py, wheels[0]), deadline,
                 progress, tag=TAG, error=InstallError, show=_pip_line, env=env)
        steps["install"] = round(time.monotonic() - t, 1)
        check = run_step("check the import", [str(py), "-c", VERSION_CODE], deadline, progress,
                         tag=TAG, error=InstallError, show=lambda _line: None)
        found = json.loads(check.strip().splitlines()[-1])
        if found.get("version") != version:
            raise InstallError(f"the new venv {venv} has llama_cpp {found.get('version')}, "
                               f"expected {version}")
        freeze = run_step("pip freeze", [str(py), "-m", "pip", "freeze", "--all"], deadline,
                          lambda _m: None, tag=TAG, error=InstallError).splitlines()
        shutil.rmtree(work, ignore_errors=True)
        info = {
            "distribution": DISTRIBUTION, "version": version, "python": found.get("python"),
            "base_python": base_python, "cmake_args": list(CMAKE_FLAGS), "jobs": jobs,
            "system_info": found.get("system_info"), "compiler": shutil.which("c++"),
            "created_utc": datetime.now(UTC).isoformat(),
            "install_s": round(time.monotonic() - t0, 1), "steps_s": steps,
            "wheel_bytes": wheel_bytes, "disk_bytes": dir_bytes(venv), "freeze": freeze,
        }
        write_install_info(vdir, info)
        progress(f"[{TAG}] done in {info['install_s']:.0f} s, "
                 f"{info['disk_bytes'] / 1e6:.0f} MB: {py}")
        return py


def ensure_llama_cpp_python(explicit: str | os.PathLike | None = None, install: bool = True,
                            progress: Progress = _stderr, timeout_s: float = 2400.0) -> Path:
    """The Python to run ``llama_cpp.server`` with; installs the cached venv when none is
    found and ``install`` is true, else raises FileNotFoundError saying what to do."""
    py = find_llama_cpp_python(explicit)
    if py is not None:
        return py
    if not install:
        raise FileNotFoundError(
            f"no llama-cpp-python[server]: run `loadgen serve llamacpp-python --install` once "
            f"(creates {install_dir()}), or pass --python PATH (or set ${ENV_PYTHON})")
    return install_llama_cpp_python(progress=progress, timeout_s=timeout_s)
