"""What every ``loadgen serve RUNTIME`` that uses the common lifecycle shares.

The lifecycle flags (where to listen, the served model name, the log folder, the start-up
timeout, ``--info-json``, ``--profile``) and the command's body: launch the runtime
(servers/launch.py), print where it serves and its info, and wait until Ctrl-C/SIGTERM (exit
code 0) or until the server exits by itself (1, naming its log). A server that fails to start is exit code 1 with the
error, which quotes the tail of the server's log. Used by servers/llamacpp/cli.py,
servers/vllm/cli.py and servers/triton/cli.py, and ``serve`` also by the sim and pytorch
runtimes when they start their server as a child (--info-json, --profile).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any


def add_lifecycle_arguments(p: argparse.ArgumentParser, *, served_model_default: str,
                            startup_timeout_s: float = 300.0, startup_note: str = "",
                            info_note: str = "runtime, version, argv",
                            port_help: str = "TCP port") -> None:
    """``--host --port --served-model-name --log-dir --startup-timeout --info-json
    --profile --profile-dir`` (the runtime passes ``servers.profile_flags.profile_settings(ns)``
    to its ServeSettings before building or installing anything)."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help=f"{port_help}; 0 picks a free one (default 0)")
    p.add_argument("--served-model-name", default=None,
                   help=f"model id clients must send (default: {served_model_default})")
    p.add_argument("--log-dir", default="results/servers", help="server log folder "
                   "(default %(default)s)")
    p.add_argument("--startup-timeout", type=float, default=startup_timeout_s,
                   help=f"seconds to wait until the server serves the model (default "
                   f"{startup_timeout_s:g}{startup_note})")
    p.add_argument("--info-json", default=None, metavar="FILE",
                   help=f"also write the server info ({info_note}) to FILE")
    from servers.profile_flags import add_profile_arguments

    add_profile_arguments(p)  # --profile perf|nsys, --profile-dir (docs/telemetry.md)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(runtime: Any, settings: Any, info_json: str | None) -> int:
    """Launch ``runtime`` with ``settings`` (servers.launch), print where and what, and wait
    until a signal (0) or the server's own exit (1)."""
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


def print_installed(python: Path, runtime: Any) -> int:
    """What ``--install`` without a model prints: the Python on stdout (for scripts), the
    runtime's version on stderr (without the long install-info); exit code 0."""
    print(python)
    print(json.dumps({k: v for k, v in runtime.version().items() if k != "install_info"},
                     indent=2), file=sys.stderr)
    return 0


# -- the flags every runtime takes --------------------------------------------------------
# `loadgen serve RUNTIME --model M [--max-batch-size B] [--tensor-parallel-size N] [--port P]
# [-- extra runtime flags]` means the same for every runtime (docs/servers.md has the table of
# what each maps them to). Runtimes add their own flags beside these.

# Runtimes that are this project's own servers: everything after `--` is parsed as their own
# flags (they have no other program to pass it to).
OWN_FLAG_RUNTIMES = ("sim", "pytorch")


def add_uniform_arguments(p: argparse.ArgumentParser, *, positional_model: bool = True,
                          no_tensor_parallel: str | None = None,
                          batch_one_only: str | None = None) -> None:
    """Add the uniform flags a runtime's parser lacks.

    ``positional_model``: the runtime takes MODEL as a positional; ``--model M`` is the same.
    ``no_tensor_parallel``: the runtime has no tensor parallelism; ``--tensor-parallel-size``
    then takes only 1 and the text says what to use instead. ``batch_one_only``: likewise for a
    runtime that serves one request at a time (``--max-batch-size`` 1 only).
    """
    from loadgen.flags import _positive_int

    if positional_model:
        p.add_argument("--model", dest="model_flag", metavar="MODEL", default=None,
                       help="the model to serve (the same as the positional MODEL)")
    if no_tensor_parallel is not None:
        p.add_argument("--tensor-parallel-size", "-tp", dest="tensor_parallel_size",
                       type=_positive_int("--tensor-parallel-size"), default=None,
                       help=f"only 1: {no_tensor_parallel}")
        p.set_defaults(uniform_no_tp=no_tensor_parallel)
    if batch_one_only is not None:
        p.add_argument("--max-batch-size", dest="max_batch_size",
                       type=_positive_int("--max-batch-size"), default=None,
                       help=f"only 1: {batch_one_only}")
        p.set_defaults(uniform_batch_one=batch_one_only)
    p.set_defaults(passthrough=[])


def normalise_uniform(ns: argparse.Namespace, runtime: str) -> None:
    """Check and fold the uniform flags into what the runtime's handler reads; UsageError
    names a flag the runtime cannot honour and says what to use instead."""
    from loadgen.flags import UsageError

    if hasattr(ns, "model_flag"):
        if ns.model_flag and ns.model and ns.model_flag != ns.model:
            raise UsageError(f"two models given: {ns.model!r} and --model {ns.model_flag!r}; "
                             "give one")
        ns.model = ns.model or ns.model_flag
    note = getattr(ns, "uniform_no_tp", None)
    if note and (ns.tensor_parallel_size or 1) > 1:
        raise UsageError(f"--tensor-parallel-size {ns.tensor_parallel_size}: runtime "
                         f"{runtime!r} has no tensor parallelism here ({note})")
    note = getattr(ns, "uniform_batch_one", None)
    if note and (ns.max_batch_size or 1) > 1:
        raise UsageError(f"--max-batch-size {ns.max_batch_size}: runtime {runtime!r} serves "
                         f"one request at a time ({note})")
    if ns.passthrough and hasattr(ns, "server_arg"):
        ns.server_arg = [*ns.server_arg, *ns.passthrough]  # `-- ARGS` = --server-arg ARG ...
