"""A child process that stops when its parent dies, however the parent dies (SIGKILL too).

Linux: ``prctl(PR_SET_PDEATHSIG, sig)`` asks the kernel to send ``sig`` to this process when
its parent exits; called through ctypes (the C library's ``prctl``), no extra package. Two
details of the kernel's rule matter here:

- it is the parent *thread* that created the child whose exit sends the signal, so the
  parent must start its children from a thread that lives as long as they do (loadgen
  starts its workers from the thread that runs the run, and waits for them there);
- a parent that died before the call is never signalled for: the call is followed by a
  check of ``getppid()`` against the parent's pid, and the signal is sent at once if the
  child has already been re-parented.

Elsewhere (macOS) there is no such call: ``die_with_parent`` says so and the child relies on
its other watch (the closed socket of loadgen/worker_process.py).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> str:
    """Have ``sig`` sent to this process when ``parent_pid`` (its parent) dies; return how
    (for the record) or why not."""
    if not sys.platform.startswith("linux"):
        return f"not available on {sys.platform} (no prctl PR_SET_PDEATHSIG)"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        return f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}"
    if os.getppid() != parent_pid:  # it died before the call: nobody will signal us
        os.kill(os.getpid(), sig)
    return f"prctl(PR_SET_PDEATHSIG, {signal.Signals(sig).name})"
