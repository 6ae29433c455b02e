"""loadgen/parent_death.py: a child that asked the kernel dies with its parent, SIGKILL too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CHILD = ("import sys, time\n"
         "from loadgen.parent_death import die_with_parent\n"
         "if sys.argv[1] == 'ask':\n"
         "    die_with_parent(int(sys.argv[2]))\n"
         "print('ready', flush=True)\n"
         "time.sleep(60)\n")
# the parent starts one child that asks and one that does not, prints their pids, waits
PARENT = ("import os, subprocess, sys, time\n"
          "kids = [subprocess.Popen([sys.executable, '-c', sys.argv[1], how, str(os.getpid())],\n"
          "                         stdout=subprocess.PIPE, text=True) for how in ('ask', 'no')]\n"
          "for k in kids:\n"
          "    assert k.stdout.readline() == 'ready\\n'\n"
          "print(kids[0].pid, kids[1].pid, flush=True)\n"
          "time.sleep(60)\n")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_child_that_asked_dies_when_its_parent_is_sigkilled_and_one_that_did_not_lives():
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE,
                              text=True, env=ENV, cwd=ROOT)
    asked = other = None
    try:
        asked, other = map(int, parent.stdout.readline().split())
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(asked) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(asked)
        assert _alive(other)  # without the request an orphan lives on (re-parented)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in (asked, other):
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_is_signalled_at_once():
    # the pid given is not this child's parent: as if the parent had died before the call
    p = subprocess.run([sys.executable, "-c", CHILD, "ask", "1"], env=ENV, cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == -signal.SIGTERM and p.stdout == ""
