"""Entry point of a local worker process: ``python -m loadgen.worker_process FD PARENT_PID``.

The parent (loadgen/workers.py) starts it as a fresh interpreter in its own process group
(a terminal's Ctrl-C reaches only the parent, which stops the workers) and talks to it over
the inherited socket FD with ``multiprocessing.connection`` messages:

    parent -> worker   WorkerJob                      the share to send
    worker -> parent   ("ready", prepare_s)           bodies built, heap frozen
    parent -> worker   ("start", t0) | ("stop",)      the common t0 (perf_counter)
    worker -> parent   ("progress", counters)         once a second during the run; with
                                                      live metrics the counters tuple ends
                                                      with the finished requests' times
    parent -> worker   ("stop",)                      Ctrl-C: cancel in-flight, report
    worker -> parent   ("done", report) | ("stopped", None) | ("error", text)

Not ``multiprocessing.Process``: its spawn method re-runs the parent's ``__main__`` script in
the child (a script without an ``if __name__ == "__main__"`` guard would run again), and a
child that dies while the parent writes its arguments leaves the parent blocked for ever.
The worker stops when the parent dies, however it dies (a SIGKILL too), so that no orphan
goes on sending load: the kernel sends it SIGTERM when the parent exits (prctl
PR_SET_PDEATHSIG, loadgen/parent_death.py), and the socket's end of file says the same. Before
t0 SIGTERM simply ends the process (nothing is recorded yet); during the run it stops the
engine as the parent's "stop" does (in-flight requests recorded as cancelled, records
closed), and the report that cannot be sent is dropped: the parent's run directory is
recovered from the worker's files (analysis/load.py).
"""

from __future__ import annotations

import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from loadgen.parent_death import die_with_parent
from loadgen.worker import PreparedWorker


def main(fd: int, parent_pid: int | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if parent_pid is not None:
        die_with_parent(parent_pid, signal.SIGTERM)
    conn = Connection(fd)
    try:
        job = conn.recv()
        prepared = PreparedWorker(job)
        conn.send(("ready", prepared.prepare_s))
        msg = conn.recv()
        if msg[0] != "start":
            conn.send(("stopped", None))
            return 0
        import uvloop

        rep = uvloop.run(_run(conn, prepared, msg[1]))
        conn.send(("done", rep))
        return 0
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 1  # the parent is gone
    except BaseException as e:
        try:
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        except OSError:
            pass
        return 1


async def _run(conn: Connection, prepared: PreparedWorker, t0: float) -> dict[str, Any]:
    import asyncio

    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"stop": False}
    fd = conn.fileno()

    def stop() -> None:
        """The parent said stop, or died (end of file, a failed send, SIGTERM)."""
        if state["stop"]:
            return
        state["stop"] = True
        loop.remove_reader(fd)
        if "task" in state:
            state["task"].cancel()

    def on_message() -> None:
        try:
            m = conn.recv()
        except (EOFError, OSError):
            m = ("stop",)  # the parent died: stop too
        if m[0] == "stop":
            stop()

    def on_task(task: Any) -> None:
        state["task"] = task
        if state["stop"]:
            task.cancel()

    def progress(res: Any, now: float) -> None:
        c = res.counters
        msg = (c.started, c.sent, c.done, c.failed, c.in_flight, now)
        rows = prepared.take_live()
        try:
            conn.send(("progress", msg if rows is None else (*msg, rows)))
        except OSError:  # the parent is gone
            stop()

    loop.add_reader(fd, on_message)
    loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        return await prepared.run(t0, on_progress=progress, on_task=on_task)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)  # back to the default: end the process
        if not state["stop"]:
            loop.remove_reader(fd)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None))
