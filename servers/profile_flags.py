"""``--profile perf|nsys`` and ``--profile-dir DIR`` of every ``loadgen serve RUNTIME``.

``add_profile_arguments(parser)`` adds the flags; ``profile_settings(ns)`` returns the
``ServeSettings`` keywords (``profile``, ``profile_dir``) and checks, before anything is built,
installed or started, that the tool is on PATH: if not, ``UsageError`` (exit 2) names the tool
and how to install it. The server then runs as the profiler's child (servers/launch.py) and the
trace is written when it stops (docs/telemetry.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from loadgen.flags import UsageError
from loadgen.telemetry.profiling import TOOLS


def add_profile_arguments(p: Any) -> None:
    """The two flags, on a parser or an argument group."""
    p.add_argument("--profile", choices=TOOLS, default=None,
                   help="run the server under `perf record -g` or `nsys profile`; the trace "
                   "(perf.data / nsys-report.nsys-rep) is written when the server stops; "
                   "`loadgen run --server-info FILE` and `loadgen profile attach RUN_DIR` keep "
                   "it in the run directory (docs/telemetry.md)")
    p.add_argument("--profile-dir", default=None, metavar="DIR",
                   help="where the profiler writes (default LOG_DIR/<runtime>-<port>-<tool>/)")


def profile_settings(ns: argparse.Namespace) -> dict[str, Any]:
    """``profile``/``profile_dir`` for ServeSettings; {} without --profile."""
    from loadgen.telemetry.profiling import ProfilerUnavailable, find_profiler

    tool = getattr(ns, "profile", None)
    pdir = getattr(ns, "profile_dir", None)
    if tool is None:
        if pdir:
            raise UsageError("--profile-dir needs --profile perf or --profile nsys")
        return {}
    try:
        find_profiler(tool)
    except ProfilerUnavailable as e:
        raise UsageError(f"--profile {tool}: {e}") from None
    return {"profile": tool, "profile_dir": Path(pdir) if pdir else None}


def launched(ns: argparse.Namespace) -> bool:
    """True when a runtime that serves in-process (sim, pytorch) must start its server as a
    child through the common lifecycle instead: for --profile or --info-json (and for
    --profile-dir, so that a --profile-dir without --profile is refused, not ignored)."""
    return any(getattr(ns, k, None) for k in ("profile", "profile_dir", "info_json"))
