"""The run manifest: configuration, seeds, tool version and commit, and the basic environment.

Every field says how it was obtained, and a field that could not be read is recorded as
``{"unavailable": reason}``, never guessed. A run's ``environment`` is the full environment
manifest of ``loadgen.telemetry.env.environment()`` (GPUs, NUMA, huge pages, kernel command
line, container/VM; docs/telemetry.md); ``basic_environment()`` is kept for callers that want
the short form. The file is rewritten atomically (temporary file + rename), so a crash never
leaves half a manifest.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

import loadgen

PACKAGES = ("aiohttp", "httptools", "msgspec", "uvloop", "numpy", "scipy", "orjson", "pyarrow",
            "hdrhistogram", "prometheus-client", "psutil", "llm-loadgen")
SECRET_HEADERS = ("authorization", "api-key", "x-api-key", "proxy-authorization", "cookie")


def unavailable(reason: str) -> dict[str, str]:
    return {"unavailable": reason}


def git_commit() -> dict[str, Any]:
    """The commit of this tool's source tree, and whether it had uncommitted changes."""
    root = Path(loadgen.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return {"commit": sha, "dirty": bool(dirty), "source": f"git rev-parse HEAD in {root}"}
    except (OSError, subprocess.SubprocessError) as e:
        return unavailable(f"not a git checkout or git missing ({type(e).__name__})")


def _cpu_model() -> Any:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
        return unavailable("no 'model name' in /proc/cpuinfo")
    except OSError as e:
        return unavailable(f"/proc/cpuinfo unreadable: {e}")


def _memory_bytes() -> Any:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
        return unavailable("no MemTotal in /proc/meminfo")
    except OSError as e:
        return unavailable(f"/proc/meminfo unreadable: {e}")


def _read(path: str) -> Any:
    try:
        return Path(path).read_text().strip()
    except OSError as e:
        return unavailable(f"{path} unreadable: {e.strerror}")


def package_versions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = unavailable("not installed")
    return out


def basic_environment() -> dict[str, Any]:
    os_release: Any
    try:
        os_release = platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError as e:
        os_release = unavailable(str(e))
    return {
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": _memory_bytes(),
        "kernel": platform.release(),
        "os": os_release,
        "machine": platform.machine(),
        "transparent_hugepage": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "packages": package_versions(),
        "source": "platform, os, /proc and /sys, importlib.metadata",
    }


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """Header values that carry credentials are never written anywhere."""
    return {k: ("<redacted>" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with the values of --api-key and of credential headers replaced."""
    out: list[str] = []
    redact_next = False
    for a in argv:
        if redact_next:
            out.append(_redact_header_arg(a) if redact_next == "header" else "<redacted>")
            redact_next = False
            continue
        if a == "--api-key":
            redact_next = True
        elif a == "--header":
            redact_next = "header"  # type: ignore[assignment]
        elif a.startswith("--api-key="):
            a = "--api-key=<redacted>"
        elif a.startswith("--header="):
            a = "--header=" + _redact_header_arg(a[len("--header="):])
        out.append(a)
    return out


def _redact_header_arg(h: str) -> str:
    for sep in ("=", ":"):
        if sep in h:
            k = h.split(sep, 1)[0]
            if k.strip().lower() in SECRET_HEADERS:
                return f"{k}{sep}<redacted>"
    return h


def tool_info() -> dict[str, Any]:
    return {"name": "llm-loadgen", "version": loadgen.__version__, "git": git_commit()}


def update_json_locked(path: Path, update: Any) -> Any:
    """Read-modify-write of a JSON file, holding an exclusive ``flock`` on its folder.

    ``update(current) -> new | None`` (None: leave the file alone). Two processes that recover
    parts of a dead run at the same moment (``load_run`` and the telemetry process) then never
    lose each other's change to the manifest.
    """
    import fcntl

    fd = os.open(Path(path).parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        new = update(orjson.loads(Path(path).read_bytes()))
        if new is not None:
            write_json_atomic(Path(path), new)
        return new
    finally:
        os.close(fd)  # releases the lock


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                                 | orjson.OPT_NON_STR_KEYS))
    os.replace(tmp, path)
