"""The results store: where matrices write, shared safely by several at once.

Layout (docs/experiments.md)::

    STORE/
      store.json                 layout version
      catalog.sqlite             the queryable index (derived: rebuilt from the directories)
      cells/<cell id>/
        cell.json                the cell's configuration, status, cause, attempts, result
        .lock                    flock()ed by the matrix process running the cell
        attempt-<n>/             one ``loadgen sweep`` directory per attempt: sweep.json,
                                 rate-<R>/ run directories (and probe/ for rates = "auto")
      servers/<pid>.json         servers a matrix started and has not stopped yet (the ledger)
      logs/                      server logs
      matrices/<name>/           per experiment: experiment.toml as last run, matrix.json
                                 (its cells, their status, each invocation), report/

A cell's status is written only by the process that holds its lock, so two matrices sharing a
store (even running the same cell, as when two experiment files overlap) never run one cell
twice at once: the second skips a locked cell and comes back to it at the end. ``running`` in
cell.json while nobody holds the lock means the process died in that cell (killed, crashed,
machine lost): the cell is *partial* and its next run starts a new attempt; earlier attempts
stay on disk, recorded in cell.json, and are never deleted.

Locks are ``fcntl.flock`` on a file per cell: the kernel releases them when the holder dies,
even by SIGKILL, so a crash never leaves a stale lock. (On network file systems flock may not
be shared between machines; run matrices that share a store on one host.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from loadgen.manifest import write_json_atomic

STORE_LAYOUT = 1
DONE = "complete"
FINAL_OK = (DONE,)


def now_utc() -> str:
    return datetime.now(UTC).isoformat()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


class CellLock:
    """An exclusive, non-blocking (or blocking) flock on ``path``; released on close or death."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    @property
    def held(self) -> bool:
        return self.fd is not None


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ---- layout ------------------------------------------------------------------------------
    def init(self) -> Store:
        self.root.mkdir(parents=True, exist_ok=True)
        meta = self.root / "store.json"
        if not meta.exists():
            write_json_atomic(meta, {"kind": "llm-loadgen results store", "layout": STORE_LAYOUT,
                                     "created_utc": now_utc()})
        return self

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.sqlite"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def cell_dir(self, cell_id: str) -> Path:
        return self.root / "cells" / cell_id

    def matrix_dir(self, name: str) -> Path:
        return self.root / "matrices" / name

    def cell_ids(self) -> list[str]:
        d = self.root / "cells"
        return sorted(p.name for p in d.iterdir() if (p / "cell.json").exists()) if d.is_dir() else []

    # ---- cells -------------------------------------------------------------------------------
    def read_cell(self, cell_id: str) -> dict[str, Any] | None:
        return _read_json(self.cell_dir(cell_id) / "cell.json")

    def write_cell(self, cell_id: str, record: dict[str, Any]) -> None:
        record["updated_utc"] = now_utc()
        self.cell_dir(cell_id).mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.cell_dir(cell_id) / "cell.json", record)

    def lock(self, cell_id: str) -> CellLock:
        return CellLock(self.cell_dir(cell_id) / ".lock")

    def is_locked(self, cell_id: str) -> bool:
        lk = self.lock(cell_id)
        if lk.acquire():
            lk.release()
            return False
        return True

    def state(self, cell_id: str) -> str:
        """pending | complete | failed | skipped | interrupted | partial | running (another
        process holds it now)."""
        rec = self.read_cell(cell_id)
        if rec is None:
            return "running" if self.cell_dir(cell_id).exists() and self.is_locked(cell_id) \
                else "pending"
        st = rec.get("status", "pending")
        if st == "running":
            return "running" if self.is_locked(cell_id) else "partial"
        return st

    def next_attempt(self, cell_id: str) -> int:
        d = self.cell_dir(cell_id)
        ns = [int(p.name.split("-", 1)[1]) for p in d.glob("attempt-*")
              if p.name.split("-", 1)[1].isdigit()] if d.is_dir() else []
        return max(ns, default=0) + 1

    # ---- matrices ----------------------------------------------------------------------------
    def update_matrix(self, name: str, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read-modify-write matrices/<name>/matrix.json under its lock."""
        d = self.matrix_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        lk = CellLock(d / ".lock")
        lk.acquire(blocking=True)
        try:
            rec = _read_json(d / "matrix.json") or {"kind": "llm-loadgen matrix", "name": name,
                                                      "invocations": []}
            fn(rec)
            rec["updated_utc"] = now_utc()
            write_json_atomic(d / "matrix.json", rec)
            return rec
        finally:
            lk.release()

    def read_matrix(self, name: str) -> dict[str, Any] | None:
        return _read_json(self.matrix_dir(name) / "matrix.json")

    # ---- the server ledger -------------------------------------------------------------------
    def _ledger(self) -> Path:
        return self.root / "servers"

    def register_server(self, pid: int, argv: list[str], cells: list[str]) -> Path:
        import psutil

        entry = {"pid": pid, "create_time": psutil.Process(pid).create_time(), "argv": argv,
                 "owner_pid": os.getpid(), "owner_create_time": psutil.Process().create_time(),
                 "host": socket.gethostname(), "cells": cells, "started_utc": now_utc()}
        path = self._ledger() / f"{pid}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, entry)
        return path

    def unregister_server(self, pid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._ledger() / f"{pid}.json").unlink()

    def reap_orphans(self, log: Callable[[str], None] = lambda m: None) -> list[int]:
        """Stop servers that a matrix on this host started and could not stop because it died
        (its owner process is gone). Only a process whose pid *and* start time match the ledger
        is signalled, so a reused pid is never hit."""
        import psutil

        reaped = []
        for path in sorted(self._ledger().glob("*.json")) if self._ledger().is_dir() else []:
            e = _read_json(path)
            if not e or e.get("host") != socket.gethostname():
                continue
            if _alive(e["owner_pid"], e["owner_create_time"]):
                continue  # its matrix still runs: its server, not ours to touch
            if _alive(e["pid"], e["create_time"]):
                log(f"stopping server pid {e['pid']} left by a matrix that died "
                    f"({' '.join(e['argv'][:3])} ...)")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(e["pid"], signal.SIGTERM)
                try:
                    psutil.Process(e["pid"]).wait(10)
                except psutil.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(e["pid"], signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
                reaped.append(e["pid"])
            path.unlink(missing_ok=True)
        return reaped


def _alive(pid: int, create_time: float) -> bool:
    import psutil

    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - create_time) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


@contextlib.contextmanager
def locked(store: Store, cell_id: str, blocking: bool = False) -> Iterator[CellLock | None]:
    lk = store.lock(cell_id)
    if not lk.acquire(blocking=blocking):
        yield None
        return
    try:
        yield lk
    finally:
        lk.release()
