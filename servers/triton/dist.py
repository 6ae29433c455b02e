"""Find or install NVIDIA Triton Inference Server, cached per machine, from a PyPI wheel.

PyPI has no ``tritonserver`` binary package, but the ``nvidia-pytriton`` wheel bundles a real
one (Triton 2.51 in pytriton 0.7.0) with its shared libraries (``nvidia_pytriton.libs``, found
through the binary's RPATH), the Python backend and one Python-backend stub per Python version.
We do not install pytriton itself (its Python API pins numpy<2 and is not what we measure): we
``pip download`` the pinned wheel and extract only the server:

    $LOADGEN_CACHE_DIR/triton/pytriton-0.7.0/
        pytriton/tritonserver/bin/tritonserver
        pytriton/tritonserver/backends/python/{libtriton_python.so, triton_python_backend_stub,
                                                triton_python_backend_utils.py}
        nvidia_pytriton.libs/*.so
        env/            a venv for the Python backend's stub (see below)
        dist-info.json  what was installed, from where, when

Two facts about the Python backend, found on these machines:

- The stub links ``libpython3.X.so``: unless ``LD_LIBRARY_PATH`` has the running interpreter's
  libdir it loads the system's libpython, whose site-packages lack our packages, and models
  fail to load. ``server_env`` sets it (the interpreter must be built with --enable-shared).
- The stub embeds Python and finds its ``sys.prefix`` through the ``python3`` on ``PATH``, so
  ``PATH`` starts with ``env/bin``. That venv holds numpy 1.26: with numpy 2 the stub
  corrupts BYTES (string) tensors (the 4-byte length prefix of each element arrives as the
  first byte repeated, e.g. ``0x05050505``, and the stub aborts). Everything else a model
  needs (torch, transformers, this repository) is put on the model's ``sys.path`` by its
  generated ``model.py`` (servers/triton/repository.py), after the venv's numpy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from servers.install_steps import install_lock
from servers.models.gguf_tiny import cache_dir

PYTRITON_VERSION = "0.7.0"  # bundles tritonserver 2.51.0
STUB_NUMPY = "numpy==1.26.4"  # see the module docstring: numpy 2 breaks BYTES tensors in the stub
ENV_ROOT = "LOADGEN_TRITON_ROOT"  # an extracted distribution to use instead of the cache


class TritonInstallError(RuntimeError):
    """Installing the Triton server failed; the message says which step and why."""


@dataclass(frozen=True)
class TritonDist:
    """An installed Triton server: where its parts are."""

    root: Path

    @property
    def server_dir(self) -> Path:
        return self.root / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    @property
    def backend_dir(self) -> Path:
        return self.server_dir / "backends"

    @property
    def env_dir(self) -> Path:
        return self.root / "env"

    def info(self) -> dict:
        try:
            return json.loads((self.root / "dist-info.json").read_text())
        except (OSError, ValueError):
            return {}

    def complete(self) -> bool:
        return (self.binary.is_file() and (self.backend_dir / "python" /
                "triton_python_backend_stub").is_file()
                and (self.env_dir / "bin" / "python3").exists()
                and (self.root / "dist-info.json").is_file())


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def libpython_dir() -> Path:
    """The directory of the running interpreter's shared libpython (for LD_LIBRARY_PATH)."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY") or ""
    if ".so" not in name or not (Path(libdir) / name).exists():
        raise TritonInstallError(
            f"this Python ({sys.executable}) has no shared libpython ({libdir}/{name} missing; "
            "it was built without --enable-shared); Triton's Python backend needs one: use a "
            "Python built with --enable-shared (Debian's python3.11, pyenv with "
            "PYTHON_CONFIGURE_OPTS=--enable-shared)")
    return Path(libdir)


def server_env(dist: TritonDist) -> dict[str, str]:
    """Environment overrides for ``tritonserver`` (see the module docstring)."""
    lib = str(libpython_dir())
    old_ld = os.environ.get("LD_LIBRARY_PATH")
    return {
        "LD_LIBRARY_PATH": lib + (f":{old_ld}" if old_ld else ""),
        "PATH": f"{dist.env_dir / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONUNBUFFERED": "1",
    }


def default_root(version: str = PYTRITON_VERSION) -> Path:
    return cache_dir() / "triton" / f"pytriton-{version}-py{python_tag()}"


def find_triton(version: str = PYTRITON_VERSION) -> TritonDist | None:
    """``$LOADGEN_TRITON_ROOT`` (must be complete), else the cache if complete, else None."""
    env = os.environ.get(ENV_ROOT)
    if env:
        d = TritonDist(Path(env).expanduser())
        if not d.complete():
            raise FileNotFoundError(f"${ENV_ROOT} {env!r} is not a complete Triton install "
                                    f"(expected {d.binary} and {d.env_dir}); unset it to use "
                                    "the cache")
        return d
    d = TritonDist(default_root(version))
    return d if d.complete() else None


def _run(step: str, argv: list[str], timeout_s: float) -> None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise TritonInstallError(f"{step} did not finish in {timeout_s:g} s: "
                                 f"{' '.join(argv)}") from e
    if r.returncode != 0:
        raise TritonInstallError(f"{step} failed with exit code {r.returncode}: "
                                 f"{' '.join(argv)}\n{(r.stdout + r.stderr)[-2000:]}")


def install_triton(version: str = PYTRITON_VERSION, timeout_s: float = 900.0,
                   progress=lambda m: print(m, file=sys.stderr, flush=True)) -> TritonDist:
    """Download the nvidia-pytriton ``version`` wheel, extract the server, make the stub's
    venv; returns the cached ``TritonDist``. A file lock makes a concurrent install wait."""
    libpython_dir()  # fail before downloading 55 MB if the stub could never run here
    root = default_root(version)
    root.parent.mkdir(parents=True, exist_ok=True)
    with install_lock(root.parent / f".pytriton-{version}.lock"):
        dist = TritonDist(root)
        if dist.complete():
            return dist
        work = root.parent / f".work-{version}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            progress(f"[triton] downloading nvidia-pytriton=={version} (about 55 MB) into {work}")
            _run("pip download", [sys.executable, "-m", "pip", "download", "--no-deps",
                                  "--only-binary", ":all:", f"nvidia-pytriton=={version}",
                                  "-d", str(work)], timeout_s)
            wheels = sorted(work.glob("nvidia_pytriton-*.whl"))
            if not wheels:
                raise TritonInstallError(f"pip wrote no nvidia_pytriton wheel into {work}")
            stage = work / "root"
            with zipfile.ZipFile(wheels[0]) as zf:
                members = [m for m in zf.namelist()
                           if m.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/"))]
                zf.extractall(stage, members)
            new = TritonDist(stage)
            for m in members:  # zipfile drops the executable bits
                p = stage / m
                if p.is_file() and (p.suffix == ".so" or ".so." in p.name or p.parent.name
                                    in ("bin", python_tag())):
                    p.chmod(0o755)
            stub = new.server_dir / "python_backend_stubs" / python_tag() / \
                "triton_python_backend_stub"
            if not stub.is_file():
                raise TritonInstallError(f"nvidia-pytriton {version} has no Python backend "
                                         f"stub for Python {python_tag()} ({stub})")
            shutil.copy2(stub, new.backend_dir / "python" / stub.name)
            progress(f"[triton] creating the Python backend's venv with {STUB_NUMPY}")
            _run("venv", [sys.executable, "-m", "venv", str(new.env_dir)], timeout_s)
            _run("pip install", [str(new.env_dir / "bin" / "python"), "-m", "pip", "install",
                                 "--no-deps", "--only-binary", ":all:", STUB_NUMPY], timeout_s)
            info = {"nvidia_pytriton": version, "wheel": wheels[0].name,
                    "python": python_tag(), "stub_numpy": STUB_NUMPY,
                    "installed_utc": datetime.now(UTC).isoformat()}
            (stage / "dist-info.json").write_text(json.dumps(info, indent=2) + "\n")
            shutil.rmtree(root, ignore_errors=True)
            os.replace(stage, root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # The venv's scripts name their own path: moving the venv keeps python3 a symlink to
        # the base interpreter (all the stub needs), and pyvenv.cfg has no path of the venv.
        progress(f"[triton] installed in {root}")
        return TritonDist(root)


def ensure_triton(install: bool = True) -> TritonDist:
    """The Triton server to use, installing the pinned one on first use if ``install``."""
    found = find_triton()
    if found is not None:
        return found
    if not install:
        raise FileNotFoundError(f"no Triton server in {default_root()}; install it with "
                                "`loadgen serve triton --install` (downloads nvidia-pytriton "
                                f"{PYTRITON_VERSION} from PyPI)")
    return install_triton()
