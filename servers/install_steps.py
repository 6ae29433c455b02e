"""What the per-machine installers share: running a step, the lock that serialises installs,
and a cached venv's bookkeeping.

Used by servers/llamacpp/build.py, servers/llamacpp/python_install.py,
servers/vllm/install.py and servers/triton/dist.py.

A step (pip, cmake, ...) runs as its own process group with its
output echoed to a progress callback (the lines ``show`` selects, shortened as it likes, plus
any line that mentions an error) and kept as a tail; at the deadline a watchdog stops the whole group, so a
silent hang is bounded too. A failed or killed step raises the caller's error class with the
command and the last lines of its output, which is what a user needs to see what went wrong.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

Progress = Callable[[str], None]

TAIL_LINES = 40
INFO_FILE = "install-info.json"  # written last: a venv without it is an unfinished install
ERROR_LINE = re.compile(r"\berror\b", re.IGNORECASE)  # "error:", "ERROR", not "-Werror=..."


def _every_line(line: str) -> str:
    return line


def run_step(name: str, argv: list[str], deadline: float, progress: Progress, *, tag: str,
             error: type[Exception] = RuntimeError,
             show: Callable[[str], str | None] = _every_line,
             env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run ``argv``; echo ``[tag] TEXT`` for each line that ``show`` turns into a TEXT (None:
    not shown) and every error line; kill its process group at ``deadline`` (a
    ``time.monotonic()`` value). Returns the whole output; raises ``error`` quoting the last
    lines on a non-zero exit or at the deadline."""
    shown = " ".join(a if len(a) <= 80 else a[:40].split("\n")[0] + " ..." for a in argv)
    progress(f"[{tag}] {name}: {shown}")
    lines: list[str] = []
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace",
                            start_new_session=True, env=dict(env) if env is not None else None)
    expired = threading.Event()

    def kill() -> None:
        # SIGTERM first: ninja runs each compiler in a process group of its own and stops
        # them when it is terminated; a SIGKILL to our group alone would orphan them.
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            lines.append(line)
            text = show(line)
            if text is None and ERROR_LINE.search(line):
                text = line
            if text is not None:
                progress(f"[{tag}] {text}")
        rc = proc.wait()
    except BaseException:
        kill()
        proc.wait()
        raise
    finally:
        watchdog.cancel()
    tail = "\n".join(lines[-TAIL_LINES:])
    if expired.is_set():
        raise error(f"{name} did not finish before the deadline (killed); last output:\n{tail}")
    if rc != 0:
        raise error(f"{name} failed with exit code {rc}: {' '.join(argv)}\n{tail}")
    return "\n".join(lines)


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, f))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


@contextlib.contextmanager
def install_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block: a second,
    concurrent install of the same thing waits here, then finds the first one's result. The
    lock goes with the file descriptor, so a killed install never leaves it held."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def explicit_executable(sources: Iterable[tuple[str, str | os.PathLike | None]],
                        hint: str) -> Path | None:
    """The first given path of ``(source, value)`` pairs (a flag, an environment variable), or
    None when none is given. A given path that is not an executable file is an error naming
    its source (the user asked for it), not a reason to fall back silently to another one;
    ``hint`` says what to give instead."""
    for source, value in sources:
        if value:
            p = Path(value).expanduser()
            if not (p.is_file() and os.access(p, os.X_OK)):
                raise FileNotFoundError(f"{source} {str(p)!r} is not an executable file; {hint}")
            return p
    return None


def read_install_info(root: Path) -> dict:
    """``root/install-info.json`` ({} if there is none or it does not parse)."""
    try:
        return json.loads((root / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_install_info(root: Path, info: dict) -> None:
    """Write ``root/install-info.json`` atomically (the last step of an install)."""
    tmp = root / (INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, root / INFO_FILE)


def finished_venv_python(root: Path) -> Path | None:
    """``root/venv/bin/python`` if that install finished (its install-info.json is there)."""
    py = root / "venv" / "bin" / "python"
    return py if py.is_file() and read_install_info(root) else None
