"""The results store: cell locks shared between processes, what a dead run leaves behind
(a partial cell, an orphaned server) and how the next run sees it (loadgen/matrix/store.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from loadgen.matrix.store import Store

HOLD = """
import sys, time
from loadgen.matrix.store import Store
lk = Store(sys.argv[1]).lock(sys.argv[2])
assert lk.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_a_cell_locked_by_another_process_is_released_when_that_process_dies(tmp_path):
    store = Store(tmp_path).init()
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "abc"],
                         stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert p.stdout.readline().strip() == "locked"
        assert store.is_locked("abc")
        assert store.lock("abc").acquire() is False
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        assert store.is_locked("abc") is False  # the kernel dropped the flock
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_running_cell_nobody_holds_is_partial_and_gets_a_new_attempt(tmp_path):
    store = Store(tmp_path).init()
    store.write_cell("c1", {"cell_id": "c1", "status": "running", "attempt": 1})
    (store.cell_dir("c1") / "attempt-1").mkdir()
    assert store.state("c1") == "partial"
    assert store.next_attempt("c1") == 2
    lk = store.lock("c1")
    assert lk.acquire()
    try:
        assert store.state("c1") == "running"  # held (here by this process): someone runs it
    finally:
        lk.release()
    assert store.state("never-seen") == "pending"


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _dead_owner() -> tuple[int, float]:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    ct = psutil.Process(p.pid).create_time()
    p.wait()
    return p.pid, ct


def test_a_server_left_by_a_dead_matrix_is_stopped_and_a_live_matrixs_is_not(tmp_path):
    store = Store(tmp_path).init()
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    kept = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        store.register_server(orphan.pid, ["sleep", "60"], ["c1"])
        store.register_server(kept.pid, ["sleep", "60"], ["c2"])  # owner: this live process
        path = tmp_path / "servers" / f"{orphan.pid}.json"
        import orjson

        e = orjson.loads(path.read_bytes())
        e["owner_pid"], e["owner_create_time"] = _dead_owner()
        path.write_bytes(orjson.dumps(e))
        t = time.monotonic()
        assert store.reap_orphans() == [orphan.pid]
        assert time.monotonic() - t < 10
        orphan.wait(5)  # (reap_orphans may have reaped our child already)
        assert not _running(orphan.pid)
        assert kept.poll() is None  # its matrix is alive: not ours to touch
        assert not path.exists() and (tmp_path / "servers" / f"{kept.pid}.json").exists()
    finally:
        for p in (orphan, kept):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_matrix_json_updates_are_read_modify_write(tmp_path):
    store = Store(tmp_path).init()
    store.update_matrix("m", lambda r: r["invocations"].append({"n": 1}))
    rec = store.update_matrix("m", lambda r: r["invocations"].append({"n": 2}))
    assert [i["n"] for i in rec["invocations"]] == [1, 2]
    assert store.read_matrix("m")["name"] == "m"
