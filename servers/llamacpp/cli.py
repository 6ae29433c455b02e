"""``loadgen serve llamacpp`` and ``loadgen serve llamacpp-python``.

Registered through ``loadgen.cli.SERVE_MODULES``. Each starts its server with the common
lifecycle (servers/launch.py) on loopback, prints where it serves and its info, and stops it
on Ctrl-C/SIGTERM (servers/serve_cli.py). ``loadgen serve llamacpp --build`` only builds (or
finds) llama-server, ``loadgen serve llamacpp-python --install`` only installs (or finds) the
cached llama-cpp-python venv. Exit codes: 0 stopped by a signal or build/install done, 1 the
server, build or install failed, 2 bad flags.
"""

from __future__ import annotations

import argparse
import json
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


def _add_common(p: argparse.ArgumentParser) -> None:
    add_lifecycle_arguments(p, served_model_default="the GGUF file name without .gguf")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed verbatim to the server, repeatable; write flags "
                   "as --server-arg=--flash-attn --server-arg=on")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "llamacpp", help="llama.cpp's C++ llama-server (built from the pinned llama-cpp-python "
        "sdist on first use)",
        description="Start llama.cpp's llama-server on a GGUF model with -np parallel slots "
        "(continuous batching) and --metrics. The binary is --llama-server PATH, else "
        "$LOADGEN_LLAMA_SERVER, else the cached build in ~/.cache/llm-loadgen/llama.cpp/, else "
        "llama-server on PATH; if none exists it is built (several minutes, once per machine; "
        "docs/servers.md).")
    p.add_argument("model", nargs="?", help="GGUF model file (make one with "
                   "`loadgen models make-tiny --format gguf OUT`)")
    p.add_argument("--batch-size", "--max-batch-size", "-np", "--parallel", dest="slots",
                   type=_positive_int("--batch-size"), default=None,
                   help="parallel slots, the batch-size axis (llama-server -np; default 1)")
    p.add_argument("--ctx-per-slot", type=_positive_int("--ctx-per-slot"), default=2048,
                   help="context tokens per slot; -c is slots x this (default 2048)")
    p.add_argument("--threads", "-t", type=_positive_int("--threads"), default=None,
                   help="llama-server -t (default: llama.cpp's choice)")
    p.add_argument("--llama-server", default=None, metavar="PATH",
                   help="use this llama-server binary instead of the cached build")
    p.add_argument("--build", action="store_true",
                   help="build (or find) the pinned llama-server, print its path; with a model, "
                   "then serve it")
    p.add_argument("--no-auto-build", action="store_true",
                   help="fail instead of building llama-server when none is found")
    _add_common(p)
    add_uniform_arguments(p, no_tensor_parallel="llama-server splits a model over GPUs with "
                          "its own flags: pass `-- --split-mode row --tensor-split 1,1`")
    p.set_defaults(handler=cmd_llamacpp)

    q = subparsers.add_parser(
        "llamacpp-python", help="llama-cpp-python's server (one request at a time; installed "
        "in a cached venv on first use)",
        description="Start `python -m llama_cpp.server --interrupt_requests False` on a GGUF "
        "model. It serialises requests (no batching); prefer `loadgen serve llamacpp`. The "
        "Python is --python PATH, else $LOADGEN_LLAMA_CPP_PYTHON, else the cached venv in "
        "~/.cache/llm-loadgen/llama-cpp-python-0.3.36/, else this Python if it has "
        "llama_cpp.server; if none exists llama-cpp-python[server] is built there from its "
        "sdist (about 10 minutes on 2 cores, once per machine; docs/servers.md).")
    q.add_argument("model", nargs="?", help="GGUF model file")
    q.add_argument("--python", default=None,
                   help="Python that has llama-cpp-python[server] installed (default: found "
                   "as above)")
    q.add_argument("--ctx", type=_positive_int("--ctx"), default=2048,
                   help="context size --n_ctx (default 2048)")
    q.add_argument("--install", action="store_true",
                   help="install (or find) the cached llama-cpp-python venv and print its "
                   "Python; with a model, then serve it")
    q.add_argument("--no-auto-install", action="store_true",
                   help="fail instead of installing llama-cpp-python when none is found")
    _add_common(q)
    add_uniform_arguments(q, no_tensor_parallel="llama-cpp-python serves on one device here; "
                          "its --split_mode/--tensor_split go after `--`",
                          batch_one_only="use `loadgen serve llamacpp -np N` for batching")
    q.set_defaults(handler=cmd_llamacpp_python)


def _settings(ns: argparse.Namespace, max_batch: int | None):
    from servers.launch import ServeSettings

    model = Path(ns.model)
    if not model.is_file():
        raise UsageError(f"model {str(model)!r} is not a file; give a GGUF path (make a test one "
                         "with `loadgen models make-tiny --format gguf OUT`)")
    return ServeSettings(model=str(model), max_batch_size=max_batch, host=ns.host, port=ns.port,
                         served_model_name=ns.served_model_name,
                         extra_args=tuple(ns.server_arg), log_dir=Path(ns.log_dir),
                         startup_timeout_s=ns.startup_timeout, **profile_settings(ns))


def cmd_llamacpp(ns: argparse.Namespace) -> int:
    from servers.llamacpp.build import BuildError, ensure_llama_server
    from servers.llamacpp.runtime import LlamaServerRuntime

    if ns.model is None and not ns.build:
        raise UsageError("give a GGUF model to serve, or --build to only build llama-server")
    settings = _settings(ns, ns.slots) if ns.model else None
    try:
        binary = ensure_llama_server(ns.llama_server, build=not ns.no_auto_build or ns.build)
    except (BuildError, FileNotFoundError) as e:
        print(f"loadgen serve llamacpp: {e}", file=sys.stderr)
        return 1
    runtime = LlamaServerRuntime(binary=binary, ctx_per_slot=ns.ctx_per_slot,
                                 threads=ns.threads)
    if settings is None:
        print(binary)
        print(json.dumps(runtime.version(), indent=2), file=sys.stderr)
        return 0
    return serve(runtime, settings, ns.info_json)


def cmd_llamacpp_python(ns: argparse.Namespace) -> int:
    from servers.llamacpp.python_install import InstallError, ensure_llama_cpp_python
    from servers.llamacpp.runtime import LlamaCppPythonRuntime

    if ns.model is None and not ns.install:
        raise UsageError("give a GGUF model to serve, or --install to only install "
                         "llama-cpp-python")
    settings = _settings(ns, None) if ns.model else None
    try:
        python = ensure_llama_cpp_python(ns.python, install=ns.install or not ns.no_auto_install)
    except (InstallError, FileNotFoundError) as e:
        print(f"loadgen serve llamacpp-python: {e}", file=sys.stderr)
        return 1
    runtime = LlamaCppPythonRuntime(python=str(python), ctx=ns.ctx)
    if settings is None:
        return print_installed(python, runtime)
    return serve(runtime, settings, ns.info_json)
