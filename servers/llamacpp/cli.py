"""``loadgen serve llamacpp`` and ``loadgen serve llamacpp-python``.

Registered through ``loadgen.cli.SERVE_MODULES``. Each starts its server with the common
lifecycle (servers/launch.py) on loopback, prints where it serves and its info, and stops it
on Ctrl-C/SIGTERM. ``loadgen serve llamacpp --build`` only builds (or finds) llama-server.
Exit codes: 0 stopped by a signal or build done, 1 the server failed, 2 bad flags.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from loadgen.flags import UsageError, _positive_int
from servers.profile_flags import add_profile_arguments, profile_settings


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default 0)")
    p.add_argument("--served-model-name", default=None,
                   help="model id clients must send (default: the GGUF file name without .gguf)")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed verbatim to the server, repeatable; write flags "
                   "as --server-arg=--flash-attn --server-arg=on")
    p.add_argument("--log-dir", default="results/servers", help="server log folder "
                   "(default %(default)s)")
    p.add_argument("--startup-timeout", type=float, default=300.0,
                   help="seconds to wait until the server serves the model (default 300)")
    p.add_argument("--info-json", default=None, metavar="FILE",
                   help="also write the server info (runtime, version, argv) to FILE")
    add_profile_arguments(p)


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
    p.add_argument("--batch-size", "-np", "--parallel", dest="slots",
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
    p.set_defaults(handler=cmd_llamacpp)

    q = subparsers.add_parser(
        "llamacpp-python", help="llama-cpp-python's server (one request at a time)",
        description="Start `python -m llama_cpp.server --interrupt_requests False` on a GGUF "
        "model. It serialises requests (no batching); prefer `loadgen serve llamacpp`. Needs "
        "llama-cpp-python installed in the Python given by --python.")
    q.add_argument("model", help="GGUF model file")
    q.add_argument("--python", default=sys.executable,
                   help="Python that has llama_cpp installed (default: this one)")
    q.add_argument("--ctx", type=_positive_int("--ctx"), default=2048,
                   help="context size --n_ctx (default 2048)")
    _add_common(q)
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


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(runtime, settings, info_json: str | None) -> int:
    """Launch, print where and what, and wait until a signal or the server's exit."""
    from servers.launch import launch
    from servers.process import ServerStartError

    try:
        server = launch(runtime, settings)
    except (ServerStartError, FileNotFoundError, ValueError) as e:
        print(f"loadgen serve {runtime.name}: {e}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with server:
        info = server.info()
        print(f"{runtime.name} serving {server.model!r} at {server.base_url} "
              f"(started in {server.started_s:.2f} s; log {info['log']})", flush=True)
        print(json.dumps(info, indent=2, default=str), flush=True)
        if info_json:
            Path(info_json).write_text(json.dumps(info, indent=2, default=str) + "\n")
        try:
            rc = server.process.proc.wait()
        except KeyboardInterrupt:
            return 0
    print(f"loadgen serve {runtime.name}: server exited with code {rc}; see {info['log']}",
          file=sys.stderr)
    return 1


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
    return _serve(runtime, settings, ns.info_json)


def cmd_llamacpp_python(ns: argparse.Namespace) -> int:
    from servers.llamacpp.runtime import LlamaCppPythonRuntime

    runtime = LlamaCppPythonRuntime(python=ns.python, ctx=ns.ctx)
    return _serve(runtime, _settings(ns, None), ns.info_json)
