"""Find or build llama.cpp's C++ ``llama-server``, cached per machine.

PyPI has no llama.cpp server binary, but the llama-cpp-python sdist vendors the whole llama.cpp
source, server included. We pin one llama-cpp-python version, download its sdist with pip,
and build only the ``llama-server`` target with CMake:

- ``-DGGML_NATIVE=OFF``: no ``-march=native``; ggml then targets AVX2/FMA (x86-64-v3), so a
  cached binary runs on any CI machine of that class, not only on the CPU that built it;
- ``-DBUILD_SHARED_LIBS=OFF``: one self-contained executable, nothing to put on LD_LIBRARY_PATH;
- ``-DLLAMA_USE_PREBUILT_UI=OFF``: otherwise CMake tries to download the web UI;
- no tests, examples, curl or OpenSSL (the server is used on loopback only).

The binary lands in ``$LOADGEN_CACHE_DIR/llama.cpp/<version>/bin/llama-server`` (default cache
``~/.cache/llm-loadgen``) with a ``build-info.json`` beside it. About 12 CPU-minutes; later
runs find it in well under a second. Which binary is used, first match wins:
``--llama-server PATH`` > ``$LOADGEN_LLAMA_SERVER`` > the cached build > ``llama-server`` on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from servers.install_steps import explicit_executable, install_lock, run_step
from servers.models.gguf_tiny import cache_dir

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the pinned sdist whose vendored llama.cpp we build
ENV_BINARY = "LOADGEN_LLAMA_SERVER"
TARGET = "llama-server"

CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
)

Progress = Callable[[str], None]


class BuildError(RuntimeError):
    """The llama-server build failed; the message says which step and quotes its output."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def version_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    return cache_dir() / "llama.cpp" / version


def cached_binary(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """Where the build of ``version`` is (or will be) cached."""
    return version_dir(version) / "bin" / TARGET


def find_llama_server(explicit: str | os.PathLike | None = None,
                      version: str = LLAMA_CPP_PYTHON_VERSION) -> Path | None:
    """The llama-server to use (see the module docstring for the order), or None.

    An explicit path or $LOADGEN_LLAMA_SERVER that is not an executable file is an error (the
    user asked for it), not a reason to fall back silently to another binary.
    """
    given = explicit_executable(
        (("--llama-server", explicit), (ENV_BINARY, os.environ.get(ENV_BINARY))),
        "give the path of a llama-server binary")
    if given is not None:
        return given
    cached = cached_binary(version)
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which(TARGET)
    return Path(on_path) if on_path else None


def build_info(binary: Path) -> dict:
    """The ``build-info.json`` written beside a binary we built ({} for other binaries)."""
    try:
        return json.loads((binary.parent / "build-info.json").read_text())
    except (OSError, ValueError):
        return {}


def cmake_configure_args(src: Path, build: Path, generator: str | None) -> list[str]:
    gen = ["-G", generator] if generator else []
    return ["cmake", "-S", str(src), "-B", str(build), *gen, *CMAKE_FLAGS]


def cmake_build_args(build: Path, jobs: int) -> list[str]:
    return ["cmake", "--build", str(build), "--target", TARGET, "-j", str(jobs)]


def _every(n: int) -> Callable[[str], str | None]:
    count = 0

    def show(line: str) -> str | None:
        nonlocal count
        count += 1
        return line if count % n == 0 else None

    return show


def _run_step(name: str, argv: list[str], deadline: float, progress: Progress,
              cwd: Path | None = None, echo_every: int = 1) -> None:
    """Run one build step (servers/steps.py), echoing every ``echo_every``-th line and any
    error line; its process group is killed at ``deadline``."""
    run_step(name, argv, deadline, progress, tag="llama.cpp build", error=BuildError,
             show=_every(echo_every), cwd=cwd)


def build_llama_server(
    version: str = LLAMA_CPP_PYTHON_VERSION,
    jobs: int | None = None,
    timeout_s: float = 1500.0,
    progress: Progress = _stderr,
    work_dir: Path | None = None,
    keep_work: bool = False,
) -> Path:
    """Download the llama-cpp-python ``version`` sdist, build ``llama-server``, cache it.

    Returns the cached binary. Safe against a concurrent build of the same version (a file
    lock: the second waits, then finds the binary). ``work_dir`` holds the sdist, the source and
    the CMake build tree (default: inside the cache; removed after success unless
    ``keep_work``); a step whose output is already there is not repeated.
    """
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise BuildError(f"building llama-server needs {tool!r} on PATH (e.g. apt-get install "
                             "cmake g++); or pass --llama-server PATH to an existing binary")
    vdir = version_dir(version)
    vdir.mkdir(parents=True, exist_ok=True)
    target = cached_binary(version)
    deadline = time.monotonic() + timeout_s
    with install_lock(vdir / ".build.lock"):
        if target.is_file():
            return target
        t0 = time.monotonic()
        work = Path(work_dir) if work_dir else vdir / "work"
        work.mkdir(parents=True, exist_ok=True)
        sdist = work / f"llama_cpp_python-{version}.tar.gz"
        if not sdist.exists():
            _run_step("download sdist", [sys.executable, "-m", "pip", "download", "--no-deps",
                                         "--no-binary", ":all:", f"llama-cpp-python=={version}",
                                         "-d", str(work)], deadline, progress)
        if not sdist.exists():
            raise BuildError(f"pip did not write {sdist.name} into {work}")
        top = work / f"llama_cpp_python-{version}"
        src = top / "vendor" / "llama.cpp"
        if not (src / "CMakeLists.txt").exists():
            progress(f"[llama.cpp build] extracting {sdist.name}")
            partial = work / ".extracting"  # renamed when complete: no half-extracted tree
            shutil.rmtree(partial, ignore_errors=True)
            with tarfile.open(sdist) as tf:
                tf.extractall(partial, filter="data")
            shutil.rmtree(top, ignore_errors=True)
            os.replace(partial / top.name, top)
            shutil.rmtree(partial, ignore_errors=True)
        if not (src / "tools" / "server").is_dir():
            raise BuildError(f"{sdist.name} has no vendored llama.cpp server at {src}/tools/server")
        build = work / "build"
        generator = "Ninja" if shutil.which("ninja") else None
        jobs = jobs or os.cpu_count() or 2
        _run_step("configure", cmake_configure_args(src, build, generator), deadline, progress,
                  echo_every=1000)
        _run_step(f"compile {TARGET} (-j{jobs}; about 12 CPU-minutes)",
                  cmake_build_args(build, jobs), deadline, progress)
        built = next((p for p in (build / "bin" / TARGET, build / TARGET) if p.is_file()), None)
        if built is None:
            raise BuildError(f"the build finished but {TARGET} is not in {build}/bin")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        shutil.copy2(built, tmp)
        info = {
            "llama_cpp_python": version,
            "source": f"llama-cpp-python=={version} sdist, vendor/llama.cpp",
            "cmake_flags": list(CMAKE_FLAGS),
            "generator": generator or "default",
            "jobs": jobs,
            "build_wall_s": round(time.monotonic() - t0, 1),
            "built_utc": datetime.now(UTC).isoformat(),
            "compiler": shutil.which("c++"),
        }
        (target.parent / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, target)
        if not keep_work and work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
        progress(f"[llama.cpp build] done in {info['build_wall_s']:.0f} s: {target}")
        return target


def ensure_llama_server(explicit: str | os.PathLike | None = None, build: bool = True,
                        progress: Progress = _stderr, timeout_s: float = 1500.0) -> Path:
    """The llama-server to use; builds the pinned one (with a progress message) if none is found
    and ``build`` is true, else raises FileNotFoundError saying how to get one."""
    found = find_llama_server(explicit)
    if found is not None:
        return found
    if not build:
        raise FileNotFoundError(
            f"no llama-server found (looked at ${ENV_BINARY}, {cached_binary()} and PATH); "
            "build it with `loadgen serve llamacpp --build`, or pass --llama-server PATH")
    progress(f"llama-server not found: building it from llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
             f" (first use on this machine only; several minutes) into {cached_binary()}")
    return build_llama_server(progress=progress, timeout_s=timeout_s)
