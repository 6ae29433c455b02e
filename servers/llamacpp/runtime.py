"""llama.cpp as runtimes of the common lifecycle (servers/launch.py).

``llamacpp``: llama.cpp's C++ ``llama-server`` (what people deploy): parallel slots with
continuous batching, ``/metrics``, ``/tokenize``, usage in streams. The batch-size axis is the
number of slots ``-np``; the KV cache ``-c`` is slots x per-slot context, because with an
explicit ``-np`` each slot gets ``-c / -np`` tokens of context.

``llamacpp-python``: llama-cpp-python's ``python -m llama_cpp.server``. It runs one request at
a time (there is no batch-size knob; requests queue), and unless started with
``--interrupt_requests False`` a new request aborts the stream in progress, which would turn
an open-loop benchmark into a measurement of cancellations. We always pass it.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers.launch import ServeSettings
from servers.llamacpp.build import build_info, find_llama_server
from servers.llamacpp.python_install import find_llama_cpp_python, install_info, venv_python

DEFAULT_SLOTS = 1
DEFAULT_CTX_PER_SLOT = 2048
# "version: 7512 (1c2d3e4f)" (release builds) or "version: 0.5.0-dev (build 1, commit 0c1e570)"
VERSION_RE = re.compile(r"version:\s*(\d+)\s*\(([0-9a-f]+)\)")
VERSION_NEW_RE = re.compile(r"version:\s*(\S+)\s*\(build\s*(\d+),\s*commit\s*([0-9a-f]+)\)")


def default_model_name(model: str) -> str:
    """The id clients send: the GGUF file name without ``.gguf``."""
    name = Path(model).name
    return name[:-5] if name.endswith(".gguf") else name


def parse_version(text: str) -> dict[str, Any]:
    """``llama-server --version`` output -> {"build": 1234, "commit": "abc1234", ...}.

    Built from an sdist (no git), llama.cpp reports build 1; the commit is still the source's.
    """
    out: dict[str, Any] = {}
    m = VERSION_RE.search(text)
    n = VERSION_NEW_RE.search(text)
    if m:
        out["build"], out["commit"] = int(m.group(1)), m.group(2)
        out["version"] = f"b{m.group(1)} ({m.group(2)})"
    elif n:
        out["build"], out["commit"] = int(n.group(2)), n.group(3)
        out["version"] = f"{n.group(1)} (build {n.group(2)}, commit {n.group(3)})"
    built = re.search(r"built with (.+)", text)
    if built:
        out["built_with"] = built.group(1).strip()
    return out


@dataclass
class LlamaServerRuntime:
    """``llama-server -m MODEL -np SLOTS -c SLOTS*CTX --metrics``; binary from build.py."""

    binary: Path | None = None  # None: find_llama_server() at command time
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT
    threads: int | None = None  # -t; None: llama.cpp's default (physical cores)
    name: str = "llamacpp"
    _version: dict[str, Any] | None = field(default=None, repr=False)

    def executable(self) -> Path:
        b = self.binary or find_llama_server()
        if b is None:
            raise FileNotFoundError(
                "no llama-server binary: run `loadgen serve llamacpp --build` once, or pass "
                "--llama-server PATH (or set $LOADGEN_LLAMA_SERVER)")
        return b

    def prepare(self) -> None:
        """Build the pinned llama-server if none is found (first use on a machine: minutes);
        the experiment matrix calls this for ``prepare = true`` (servers/registry.py)."""
        from servers.llamacpp.build import ensure_llama_server

        self.binary = ensure_llama_server(self.binary, build=True)
        self._version = None

    def slots(self, s: ServeSettings) -> int:
        return s.max_batch_size or DEFAULT_SLOTS

    def command(self, s: ServeSettings, port: int) -> list[str]:
        if s.tensor_parallel_size not in (None, 1):
            raise ValueError("llamacpp: tensor_parallel_size is not supported (use extra "
                             "args such as --split-mode for multi-GPU llama.cpp)")
        n = self.slots(s)
        argv = [str(self.executable()), "-m", str(s.model), "--host", s.host, "--port", str(port),
                "--alias", self.model_name(s), "-np", str(n), "-c", str(n * self.ctx_per_slot),
                "--metrics", "--no-webui"]
        if self.threads:
            argv += ["-t", str(self.threads)]
        return argv + list(s.extra_args)

    def env(self, s: ServeSettings) -> dict[str, str]:
        return {}

    def model_name(self, s: ServeSettings) -> str:
        return s.served_model_name or default_model_name(s.model)

    def version(self) -> dict[str, Any]:
        if self._version is None:
            try:
                exe = self.executable()
                r = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                                   timeout=30, stdin=subprocess.DEVNULL)
                v = parse_version(r.stdout + r.stderr)
                v = v or {"unavailable": f"unparsed --version output: {r.stderr[-200:]!r}"}
                v.update({"source": f"{exe} --version", "binary": str(exe)})
                info = build_info(exe)
                if info:
                    v["build_info"] = info
                self._version = v
            except (OSError, subprocess.SubprocessError) as e:
                self._version = {"unavailable": f"{type(e).__name__}: {e}"}
        return self._version


@dataclass
class LlamaCppPythonRuntime:
    """``python -m llama_cpp.server --interrupt_requests False``: one request at a time.

    ``python`` None: the Python found by servers/llamacpp/python_install.py (``$LOADGEN_LLAMA_
    CPP_PYTHON``, the cached venv, this interpreter if it has ``llama_cpp.server``);
    ``prepare()`` installs the cached venv when none is found.
    """

    python: str | Path | None = None
    ctx: int = DEFAULT_CTX_PER_SLOT
    name: str = "llamacpp-python"
    _version: dict[str, Any] | None = field(default=None, repr=False)

    def executable(self) -> Path:
        py = self.python or find_llama_cpp_python()
        if py is None:
            raise FileNotFoundError(
                "no llama-cpp-python[server]: run `loadgen serve llamacpp-python --install` "
                "once, or pass --python PATH (or set $LOADGEN_LLAMA_CPP_PYTHON)")
        return Path(py)

    def prepare(self) -> None:
        """Install the cached llama-cpp-python venv if none is found (first use on a machine:
        about 10 minutes on 2 cores); the experiment matrix calls this for ``prepare = true``."""
        from servers.llamacpp.python_install import ensure_llama_cpp_python

        self.python = ensure_llama_cpp_python(self.python, install=True)
        self._version = None

    def command(self, s: ServeSettings, port: int) -> list[str]:
        if s.max_batch_size not in (None, 1):
            raise ValueError(
                f"llamacpp-python serves one request at a time; max_batch_size "
                f"{s.max_batch_size} is not possible (use runtime llamacpp with -np slots)")
        return [str(self.executable()), "-m", "llama_cpp.server", "--model", str(s.model),
                "--model_alias", self.model_name(s), "--host", s.host, "--port", str(port),
                "--n_ctx", str(self.ctx), "--interrupt_requests", "False",
                *s.extra_args]

    def env(self, s: ServeSettings) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1"}

    def model_name(self, s: ServeSettings) -> str:
        return s.served_model_name or default_model_name(s.model)

    def version(self) -> dict[str, Any]:
        """``llama_cpp.__version__`` in the server's Python; for our cached venv also its
        ``install-info.json`` (CMake flags, build time, pip freeze)."""
        if self._version is not None:
            return self._version
        code = "import llama_cpp; print(llama_cpp.__version__)"
        try:
            py = self.executable()
            r = subprocess.run([str(py), "-c", code], capture_output=True, text=True,
                               timeout=60, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as e:
            return {"unavailable": f"{type(e).__name__}: {e}"}
        if r.returncode != 0:
            return {"unavailable": f"llama_cpp not importable by {py}: "
                                   f"{r.stderr.strip()[-200:]}"}
        v: dict[str, Any] = {"version": r.stdout.strip(), "source": f"llama_cpp.__version__ in {py}"}
        # (not resolved: a venv's bin/python is a symlink to the base interpreter)
        if py.absolute() == venv_python(v["version"]).absolute():
            v["install_info"] = install_info(v["version"])
        self._version = v
        return v
