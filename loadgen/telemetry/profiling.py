"""Wrapping a server command under a profiler (``perf record`` or ``nsys profile``).

``wrap_profiler(argv, tool, out_dir)`` returns the argv to give ``servers.process.
ServerProcess``: the server then runs as the profiler's child, and its profile is written to
``out_dir`` when it exits (stop it with SIGTERM/SIGINT as usual; ``perf`` and ``nsys`` forward
the signal and write their files).

When the files are complete: ``perf`` writes ``perf.data`` as it records but finalises its
header at exit; ``nsys`` writes ``nsys-report.nsys-rep`` only at exit. So the one honest moment
to take a profile is after the server has stopped. ``servers.launch.RunningServer.stop`` then
writes ``profile.json`` into the directory (``write_done``): the tool, the files with their
sizes, the server's exit code and its start/stop times. That file's presence is what
``loadgen profile attach`` (loadgen/telemetry/profile_attach.py) takes as "complete".
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

TOOLS = ("perf", "nsys")
# What each tool writes into the profile directory (the -o names below).
OUTPUT_FILES = {"perf": ("perf.data",), "nsys": ("nsys-report.nsys-rep",)}
DONE_FILE = "profile.json"  # written by write_done once the profiled server has stopped
INSTALL = {
    "perf": "install it (Debian: apt-get install linux-perf; Ubuntu: apt-get install "
            "linux-tools-$(uname -r); Fedora/RHEL: dnf install perf)",
    "nsys": "install NVIDIA Nsight Systems (https://developer.nvidia.com/nsight-systems; also "
            "in the CUDA toolkit as nsight-systems-<version>) and put the folder holding nsys "
            "on PATH",
}
# Seconds to wait for a profiled server (and the profiler writing its file) to exit after
# SIGTERM before SIGKILL: perf collects build ids at exit and nsys converts its capture into
# a report, each several seconds for a long run. A SIGKILLed profiler leaves a truncated file.
STOP_TIMEOUT_S = 120.0


class ProfilerUnavailable(RuntimeError):
    """The profiler asked for is not installed (or not on PATH)."""


def find_profiler(tool: str) -> str:
    """The path of ``tool`` on PATH; ValueError for an unknown tool, ProfilerUnavailable (with
    what to install) when it is not there."""
    if tool not in TOOLS:
        raise ValueError(f"profiler {tool!r} is not supported; use one of {', '.join(TOOLS)}")
    exe = shutil.which(tool)
    if exe is None:
        raise ProfilerUnavailable(f"profiler {tool!r} not found on PATH: {INSTALL[tool]}, or "
                                  "run the server without profiling")
    return exe


def wrap_profiler(argv: list[str], tool: str, out_dir: str | Path,
                  extra: list[str] | None = None) -> list[str]:
    """``argv`` run under ``tool``, writing its output to ``out_dir`` (created)."""
    exe = find_profiler(tool)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = list(extra or [])
    if tool == "perf":
        # -g: call graphs; perf.data is written when the server exits.
        return [exe, "record", "-g", "-o", str(out / "perf.data"), *extra, "--", *argv]
    # nsys: CUDA, NVTX and OS runtime traces; report as out/nsys-report.nsys-rep.
    return [exe, "profile", "--trace=cuda,nvtx,osrt", "--force-overwrite=true",
            "-o", str(out / "nsys-report"), *extra, *argv]


def clear_done(out_dir: str | Path) -> None:
    """Remove a ``profile.json`` left by an earlier server in ``out_dir`` (before a start)."""
    (Path(out_dir) / DONE_FILE).unlink(missing_ok=True)


def write_done(out_dir: str | Path, tool: str, started_unix: float, exit_code: int | None,
               server_argv: list[str], log: str) -> dict[str, Any]:
    """Record, once the profiled server has exited, what it left in ``out_dir``.

    ``complete`` is false, with a ``reason``, when an output file is missing or empty, or the
    profiler was killed with SIGKILL (its file may then be truncated)."""
    out = Path(out_dir)
    files, missing = [], []
    for name in OUTPUT_FILES[tool]:
        f = out / name
        size = f.stat().st_size if f.is_file() else 0
        (files if size > 0 else missing).append({"name": name, "bytes": size})
    reason = None
    if missing:
        reason = (f"{', '.join(m['name'] for m in missing)} missing or empty after the server "
                  f"stopped; see the profiler's messages in {log}")
    elif exit_code == -signal.SIGKILL:
        reason = (f"the profiler was killed (SIGKILL) after {STOP_TIMEOUT_S:g} s; the file may "
                  "be truncated")
    done = {"tool": tool, "complete": reason is None, "reason": reason, "files": files,
            "server_exit_code": exit_code, "started_unix": started_unix,
            "stopped_unix": time.time(), "server_argv": list(server_argv), "log": log}
    tmp = out / (DONE_FILE + ".tmp")
    tmp.write_text(json.dumps(done, indent=2) + "\n")
    tmp.replace(out / DONE_FILE)
    return done


def read_done(out_dir: str | Path) -> dict[str, Any] | None:
    """``profile.json`` of ``out_dir``, or None while the server has not stopped."""
    try:
        return json.loads((Path(out_dir) / DONE_FILE).read_text())
    except FileNotFoundError:
        return None
