"""Wrapping a server command under a profiler (``perf record`` or ``nsys profile``).

``wrap_profiler(argv, tool, out_dir)`` returns the argv to give ``servers.process.
ServerProcess``: the server then runs as the profiler's child, and its profile is written to
``out_dir`` when it exits (stop it with SIGTERM/SIGINT as usual; ``perf`` and ``nsys`` forward
the signal and write their files).
"""

from __future__ import annotations

import shutil
from pathlib import Path

TOOLS = ("perf", "nsys")


class ProfilerUnavailable(RuntimeError):
    """The profiler asked for is not installed (or not on PATH)."""


def wrap_profiler(argv: list[str], tool: str, out_dir: str | Path,
                  extra: list[str] | None = None) -> list[str]:
    """``argv`` run under ``tool``, writing its output to ``out_dir`` (created)."""
    if tool not in TOOLS:
        raise ValueError(f"profiler {tool!r} is not supported; use one of {', '.join(TOOLS)}")
    exe = shutil.which(tool)
    if exe is None:
        hint = ("install linux-tools (perf) for this kernel" if tool == "perf" else
                "install NVIDIA Nsight Systems (nsys) and put it on PATH")
        raise ProfilerUnavailable(f"profiler {tool!r} not found on PATH: {hint}, or run the "
                                  "server without profiling")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = list(extra or [])
    if tool == "perf":
        # -g: call graphs; perf.data is written when the server exits.
        return [exe, "record", "-g", "-o", str(out / "perf.data"), *extra, "--", *argv]
    # nsys: CUDA, NVTX and OS runtime traces; report as out/nsys-report.nsys-rep.
    return [exe, "profile", "--trace=cuda,nvtx,osrt", "--force-overwrite=true",
            "-o", str(out / "nsys-report"), *extra, *argv]
