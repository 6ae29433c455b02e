"""Running a matrix: each server configuration started once, its cells run, then stopped.

For each group of cells that share a server configuration (runtime, options, flags, model,
batch size, parallelism), in expansion order:

1. cells already complete in the store are skipped; cells another matrix holds (locked) are
   deferred to the end; the others are locked for this process;
2. the runtime is looked up by name (servers/registry.py), prepared if the file says
   ``prepare = true``, and checked: not installed or not available -> the cells are recorded
   ``skipped`` with the cause, and the matrix goes on;
3. the model source is resolved (tiny models are made), the server is launched (and entered in
   the store's server ledger), and each cell runs as one ``loadgen sweep`` into
   ``cells/<id>/attempt-<n>/``; a server with ``profile = "perf"|"nsys"`` is started and
   stopped for each cell, and its trace is then kept in each of the cell's run directories
   (``_keep_profile``);
4. a cell that raises is recorded ``failed`` with its cause (and the server's log when the
   server died; a dead server is restarted once for the cells after it); Ctrl-C or SIGTERM
   records the running cell ``interrupted``, stops the server and ends the matrix.

Every finished cell is indexed in the catalog at once. Deferred cells are waited for at the
end (their lock), then run if the other matrix did not complete them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadgen.matrix.cells import Cell, Expansion
from loadgen.matrix.spec import Experiment
from loadgen.matrix.store import CellLock, Store, now_utc

Log = Callable[[str], None]
MAX_CAUSE = 4000


class MatrixInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM while a matrix runs; ``signame`` says which."""

    def __init__(self, signame: str = "SIGINT"):
        super().__init__(signame)
        self.signame = signame


@dataclass
class Outcome:
    statuses: dict[str, str] = field(default_factory=dict)  # cell id -> status at the end
    ran: list[str] = field(default_factory=list)  # cells run by this invocation
    interrupted: str | None = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for st in self.statuses.values():
            out[st] = out.get(st, 0) + 1
        return out


def _cause(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    if isinstance(e, SystemExit):
        text = f"bad settings for loadgen sweep (argparse exit {e.code}); see the log above"
    return text[:MAX_CAUSE]


def cell_record(cell: Cell, exp: Experiment, old: dict[str, Any] | None) -> dict[str, Any]:
    """The cell.json content for ``cell``, keeping earlier attempts and experiments."""
    old = old or {}
    names = list(old.get("experiments") or [])
    if exp.name not in names:
        names.append(exp.name)
    return {
        "kind": "llm-loadgen matrix cell", "cell_id": cell.id, "label": cell.label,
        "axes": cell.axes, "server_key": cell.server_key, "config": cell.config,
        "status": old.get("status", "pending"), "cause": old.get("cause"),
        "attempt": old.get("attempt"), "attempts": list(old.get("attempts") or []),
        "experiments": names, "result": old.get("result"),
    }


def summarize_cell(root, slo: dict[str, float]) -> dict[str, Any]:
    """Rates, verdicts, curve points and the knee of a finished cell's sweep directory."""
    from analysis.curves import curves_of
    from analysis.sweep import load_sweep

    sw = load_sweep(root)
    c = curves_of(sw, slo or None)
    verdicts = {str(r["rate"]): r["verdict"] for r in sw.meta.get("runs", [])}
    points = [{"rate": p["rate"], "achieved_rps": p["achieved_rps"], "ok": p["ok"],
               "failed": p["failed"],
               **{f"{m}_p{q}_ms": p["latency_ms"][m][f"p{q}"] for m in ("ttft", "e2e", "itl")
                  for q in (50, 99)}} for p in c["points"]]
    return {
        "sweep_status": sw.meta.get("status"), "rates": sw.rates, "verdicts": verdicts,
        "points": points, "slo": slo or None, "knee": c.get("knee"),
        "max_achieved_rps": max((p["achieved_rps"] for p in c["points"]), default=None),
        "stopped": sw.meta.get("stopped"), "probe": sw.meta.get("probe"),
    }


class MatrixRunner:
    def __init__(self, exp: Experiment, expansion: Expansion, store: Store, log: Log = print,
                 argv: list[str] | None = None, index: bool = True):
        self.exp = exp
        self.expansion = expansion
        self.store = store
        self.log = log
        self.argv = argv or []
        self.index = index
        self.outcome = Outcome()
        self.position = {c.id: i + 1 for i, c in enumerate(expansion.cells)}
        self._runtimes: dict[str, tuple[Any, str | None, str]] = {}

    # ---- small helpers -----------------------------------------------------------------------
    def _say(self, cell: Cell, msg: str) -> None:
        self.log(f"[{self.position[cell.id]}/{len(self.expansion.cells)}] {cell.label} "
                 f"{cell.id[:8]}: {msg}")

    def _index(self, cell_id: str) -> None:
        if not self.index:
            return
        from analysis.catalog import index_cell

        try:
            index_cell(self.store.root, cell_id)
        except Exception as e:  # noqa: BLE001 - the directories stay the truth; rebuild later
            self.log(f"catalog: could not index cell {cell_id}: {e} (loadgen results rebuild "
                     "recreates it from the directories)")

    def _finish(self, cell: Cell, rec: dict[str, Any], status: str, cause: str | None,
                result: dict[str, Any] | None = None) -> None:
        rec["status"], rec["cause"] = status, cause
        if result is not None:
            rec["result"] = result
        if rec.get("attempts") and rec["attempts"][-1].get("n") == rec.get("attempt") \
                and rec["attempts"][-1].get("status") == "running":
            rec["attempts"][-1].update(status=status, cause=cause, ended_utc=now_utc())
        self.store.write_cell(cell.id, rec)
        self.outcome.statuses[cell.id] = status
        self._index(cell.id)

    def _record_without_run(self, cell: Cell, status: str, cause: str) -> None:
        rec = cell_record(cell, self.exp, self.store.read_cell(cell.id))
        self._finish(cell, rec, status, cause)
        self._say(cell, f"{status}: {cause.splitlines()[0] if cause else ''}")

    # ---- runtimes ----------------------------------------------------------------------------
    def runtime_for(self, cell: Cell) -> tuple[Any, str | None, str]:
        """(runtime, cause, status if cause) for the cell's runtime and options, cached."""
        from servers import registry

        srv = cell.config["server"]
        key = hashlib.sha256(repr((srv["runtime"], sorted(srv["options"].items()),
                                   cell.prepare)).encode()).hexdigest()
        if key in self._runtimes:
            return self._runtimes[key]
        try:
            rt = registry.create(srv["runtime"], srv["options"])
        except registry.UnknownRuntime as e:
            res = (None, str(e), "skipped")
        except Exception as e:  # noqa: BLE001 - bad options are this cell's failure
            res = (None, f"cannot create runtime {srv['runtime']!r} with options "
                         f"{srv['options']}: {_cause(e)}", "failed")
        else:
            res = (rt, None, "")
            if cell.prepare and callable(getattr(rt, "prepare", None)):
                self.log(f"runtime {srv['runtime']}: preparing (prepare = true) ...")
                try:
                    rt.prepare()
                except Exception as e:  # noqa: BLE001
                    res = (None, f"runtime {srv['runtime']!r}: prepare() failed: {_cause(e)}",
                           "failed")
            if res[1] is None:
                ok, why = registry.availability(rt)
                if not ok:
                    res = (None, f"runtime {srv['runtime']!r} is not available here: {why}",
                           "skipped")
        self._runtimes[key] = res
        return res

    def _settings(self, cell: Cell, model_path: str, profile_dir=None):
        from servers.launch import ServeSettings

        srv = cell.config["server"]
        kw: dict[str, Any] = dict(
            model=model_path, max_batch_size=srv["batch_size"],
            tensor_parallel_size=srv["tp"], served_model_name=srv["model"]["served_model_name"],
            extra_args=tuple(srv["flags"]), log_dir=self.store.logs_dir,
            startup_timeout_s=cell.startup_timeout_s, die_with_parent=True,
            profile=srv.get("profile"), profile_dir=profile_dir)
        if srv["pp"] != 1:
            names = {f.name for f in dataclasses.fields(ServeSettings)}
            if "pipeline_parallel_size" not in names:
                raise ValueError(f"pipeline parallelism pp = {srv['pp']}: the server launcher "
                                 "has no pipeline-parallel setting; pass the runtime's own flag "
                                 "in flags and keep pp = 1")
            kw["pipeline_parallel_size"] = srv["pp"]
        return ServeSettings(**kw)

    def _launch(self, rt: Any, cell: Cell, model_path: str, ids: list[str], profile_dir=None):
        from servers.launch import launch

        server = launch(rt, self._settings(cell, model_path, profile_dir))
        try:
            self.store.register_server(server.process.proc.pid, list(server.process.argv), ids)
        except Exception:  # noqa: BLE001 - the ledger is a safety net, not a requirement
            pass
        return server

    def _profile_dir(self, cell: Cell):
        """Where a profiled cell's server writes (moved into the cell's runs afterwards)."""
        return self.store.logs_dir / f"profile-{cell.id}-attempt-{self.store.next_attempt(cell.id)}"

    def _keep_profile(self, cell: Cell, src) -> None:
        """After a profiled cell's server stopped: its trace into every run directory of the
        cell's attempt (hard links; loadgen/telemetry/profile_attach.py), named in each run's
        manifest and in the attempt's record in cell.json; the source folder is removed once
        every run has the files. Never raises: a profile problem does not fail the cell."""
        import shutil

        from loadgen.telemetry.profile_attach import attach_profile

        rec = self.store.read_cell(cell.id)
        if not rec or not rec.get("attempts"):
            return
        att = rec["attempts"][-1]
        root = self.store.cell_dir(cell.id) / att["dir"]
        runs: dict[str, Any] = {}
        errors: list[str] = []
        prof: dict[str, Any] = {}
        for m in sorted(root.glob("*/manifest.json")):
            try:
                prof = attach_profile(m.parent)
                runs[m.parent.name] = prof["files"]
            except Exception as e:  # noqa: BLE001
                errors.append(f"{m.parent.name}: {_cause(e)}")
        kept = bool(runs) and not errors
        if kept:
            shutil.rmtree(src, ignore_errors=True)
        reason = ("; ".join(errors) if errors else prof.get("reason") if runs
                  else "no run directory was written")
        att["profile"] = {"tool": cell.config["server"]["profile"], "runs": runs,
                          "complete": kept and bool(prof.get("complete")), "reason": reason,
                          "source": None if kept else str(src), "covers": prof.get("covers")}
        self.store.write_cell(cell.id, rec)
        self._index(cell.id)
        self._say(cell, f"{att['profile']['tool']} profile kept in {len(runs)} run "
                  f"director{'y' if len(runs) == 1 else 'ies'}" + (f"; {errors[0]}" if errors else ""))

    def _stop(self, server) -> None:
        if server is None:
            return
        pid = server.process.proc.pid if server.process.proc else None
        server.stop()
        if pid is not None:
            self.store.unregister_server(pid)

    # ---- one cell ----------------------------------------------------------------------------
    def run_cell(self, cell: Cell, server) -> str:
        from analysis.sweep import run_sweep
        from loadgen.cli import build_parser
        from loadgen.manifest import redact_argv
        from loadgen.matrix.sweepargs import sweep_argv

        rec = cell_record(cell, self.exp, self.store.read_cell(cell.id))
        n = self.store.next_attempt(cell.id)
        prev = rec["attempts"][-1] if rec["attempts"] else None
        if prev and prev.get("status") == "running":  # the process running it died
            prev.update(status="partial", cause="the matrix process stopped during this "
                        "attempt (killed or crashed); the cell was run again")
        rec["status"], rec["cause"], rec["attempt"] = "running", None, n
        rec["attempts"].append({"n": n, "dir": f"attempt-{n}", "status": "running",
                                "started_utc": now_utc(), "pid": os.getpid(),
                                "host": socket.gethostname(), "experiment": self.exp.name})
        self.store.write_cell(cell.id, rec)
        self._say(cell, f"running (attempt {n}) ...")
        t0 = time.perf_counter()
        cell_dir = self.store.cell_dir(cell.id)
        try:
            argv = sweep_argv(cell, server.base_url, server.model, str(cell_dir), f"attempt-{n}")
            ns = build_parser().parse_args(argv)
            extra = {"matrix": {"experiment": self.exp.name, "experiment_file": str(self.exp.path),
                                "cell_id": cell.id, "label": cell.label, "axes": cell.axes,
                                "attempt": n, "config": cell.config},
                     "server_launch": server.info()}
            root, _ = run_sweep(ns, redact_argv(["loadgen", *argv]), log=lambda m: None,
                                extra_manifest=extra)
            result = summarize_cell(root, cell.slo)
        except KeyboardInterrupt as e:
            name = str(e.args[0]) if e.args else "SIGINT"
            self._finish(cell, rec, "interrupted", f"interrupted by {name}; runs so far are in "
                         f"attempt-{n}, marked partial")
            self._say(cell, f"interrupted by {name}")
            raise MatrixInterrupted(name) from None
        except (Exception, SystemExit) as e:  # noqa: BLE001 - a failed cell never ends the matrix
            cause = _cause(e)
            proc = server.process.proc
            if proc is not None and proc.poll() is not None:
                from servers.process import log_tail

                cause += (f"\nthe server exited with code {proc.returncode}; last lines of "
                          f"{server.process.log_path}:\n{log_tail(server.process.log_path)}")
            if not isinstance(e, (OSError, ValueError, SystemExit)):
                cause += "\n" + "".join(traceback.format_exception(e)[-3:])
            self._finish(cell, rec, "failed", cause[:MAX_CAUSE])
            self._say(cell, f"FAILED after {time.perf_counter() - t0:.1f} s: "
                      f"{cause.splitlines()[0]}")
            return "failed"
        self._finish(cell, rec, "complete", None, result)
        k = result.get("knee") or {}
        knee = f"; knee {k['rate']:g} req/s" if k.get("rate") is not None else \
            ("; knee: below the lowest rate" if result.get("slo") else "")
        self._say(cell, f"complete in {time.perf_counter() - t0:.1f} s: rates "
                  f"{', '.join(f'{r:g}' for r in result['rates'])}{knee}")
        return "complete"

    # ---- one server configuration --------------------------------------------------------------
    def _claim(self, group: list[Cell], deferred: list[Cell]) -> tuple[list[Cell], dict[str, CellLock]]:
        todo, locks = [], {}
        for c in group:
            rec = self.store.read_cell(c.id)
            if rec and rec.get("status") == "complete":
                self.outcome.statuses[c.id] = "complete"
                self._note_experiment(c, rec)
                self._say(c, "complete earlier: skipped")
                continue
            lk = self.store.lock(c.id)
            if not lk.acquire():
                deferred.append(c)
                self._say(c, "another matrix is running it: deferred")
                continue
            rec = self.store.read_cell(c.id)  # re-read under the lock
            if rec and rec.get("status") == "complete":
                lk.release()
                self.outcome.statuses[c.id] = "complete"
                self._say(c, "complete earlier: skipped")
                continue
            locks[c.id] = lk
            todo.append(c)
        return todo, locks

    def _note_experiment(self, c: Cell, rec: dict[str, Any]) -> None:
        if self.exp.name in (rec.get("experiments") or []):
            return
        lk = self.store.lock(c.id)
        if lk.acquire():
            try:
                rec = self.store.read_cell(c.id) or rec
                rec["experiments"] = [*(rec.get("experiments") or []), self.exp.name]
                self.store.write_cell(c.id, rec)
                self._index(c.id)
            finally:
                lk.release()

    def run_group(self, group: list[Cell], deferred: list[Cell]) -> None:
        from loadgen.matrix.models import resolve_source

        todo, locks = self._claim(group, deferred)
        server = None
        try:
            for c in [c for c in todo if c.skip]:
                self._record_without_run(c, "skipped", c.skip)
            runnable = [c for c in todo if not c.skip]
            if not runnable:
                return
            first = runnable[0]
            rt, cause, status = self.runtime_for(first)
            profiled = first.config["server"].get("profile")
            if not cause and profiled:
                from loadgen.telemetry.profiling import ProfilerUnavailable, find_profiler

                try:
                    find_profiler(profiled)
                except ProfilerUnavailable as e:
                    cause, status = f"profile = {profiled!r}: {e}", "skipped"
            if cause:
                for c in runnable:
                    self._record_without_run(c, status, cause)
                return
            src = first.config["server"]["model"]["source"]
            try:
                model_path = resolve_source(src)
            except Exception as e:  # noqa: BLE001 - e.g. a missing package: these cells fail
                for c in runnable:
                    self._record_without_run(c, "failed", f"model source {src!r}: {_cause(e)}")
                return
            self.log(f"server: starting {first.config['server']['runtime']} "
                     f"(model {src}, batch {first.axes['batch_size']}, tp {first.axes['tp']}) "
                     f"for {len(runnable)} cell(s) ...")
            restarts = 0
            for i, c in enumerate(runnable):
                if server is not None and server.process.proc.poll() is not None:
                    self.log(f"server: exited with code {server.process.proc.returncode}; "
                             "restarting it for the remaining cells")
                    self._stop(server)
                    server = None
                    restarts += 1
                if server is None:
                    if restarts > 1:
                        for rest in runnable[i:]:
                            self._record_without_run(rest, "failed", "the server died twice; "
                                                     "not restarted again")
                        return
                    t = time.perf_counter()
                    pdir = self._profile_dir(c) if profiled else None
                    try:
                        server = self._launch(rt, c, model_path, [x.id for x in runnable], pdir)
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # noqa: BLE001 - ServerStartError, bad settings ...
                        cause = f"server did not start: {_cause(e)}"
                        for rest in runnable[i:]:
                            self._record_without_run(rest, "failed", cause)
                        return
                    self.log(f"server: {server.runtime.name} ready at {server.base_url} in "
                             f"{time.perf_counter() - t:.1f} s")
                try:
                    if self.run_cell(c, server) == "complete":
                        self.outcome.ran.append(c.id)
                finally:
                    if profiled:  # one server per profiled cell: its trace is this cell's
                        self._stop(server)
                        server = None
                        self._keep_profile(c, pdir)
        finally:
            self._stop(server)
            for lk in locks.values():
                lk.release()

    # ---- the whole matrix --------------------------------------------------------------------
    def run(self) -> Outcome:
        self.store.init()
        for pid in self.store.reap_orphans(self.log):
            self.log(f"stopped orphaned server pid {pid}")
        self._record_invocation(start=True)

        def on_term(signum, frame):
            raise MatrixInterrupted("SIGTERM")

        old = signal.signal(signal.SIGTERM, on_term)
        deferred: list[Cell] = []
        try:
            for group in self.expansion.groups():
                self.run_group(group, deferred)
            while deferred:
                waiting, deferred = deferred, []
                self.log(f"waiting for {len(waiting)} cell(s) that another matrix is running ...")
                for c in waiting:
                    lk = self.store.lock(c.id)
                    lk.acquire(blocking=True)
                    lk.release()
                by: dict[str, list[Cell]] = {}
                for c in waiting:
                    by.setdefault(c.server_key, []).append(c)
                for group in by.values():
                    self.run_group(group, deferred)
        except MatrixInterrupted as e:
            self.outcome.interrupted = e.signame
        except KeyboardInterrupt:
            self.outcome.interrupted = "SIGINT"
        finally:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, old)
            for c in self.expansion.cells:
                if c.id not in self.outcome.statuses:
                    self.outcome.statuses[c.id] = self.store.state(c.id)
            self._record_invocation(start=False)
        return self.outcome

    def _record_invocation(self, start: bool) -> None:
        exp, store = self.exp, self.store
        me = {"pid": os.getpid(), "host": socket.gethostname()}

        def update(rec: dict[str, Any]) -> None:
            rec["file"] = str(exp.path)
            rec["file_sha256"] = hashlib.sha256(exp.text.encode()).hexdigest()
            rec["cells"] = [{"cell_id": c.id, "label": c.label, "axes": c.axes,
                             "server_key": c.server_key, "skip": c.skip}
                            for c in self.expansion.cells]
            rec["excluded"] = [{"label": x.label, "axes": x.axes, "reason": x.reason,
                                "rule": x.rule} for x in self.expansion.excluded]
            inv = rec.setdefault("invocations", [])
            if start:
                inv.append({**me, "argv": self.argv, "started_utc": now_utc(), "ended_utc": None})
            else:
                for it in reversed(inv):
                    if it.get("pid") == me["pid"] and it.get("host") == me["host"] \
                            and it.get("ended_utc") is None:
                        it.update(ended_utc=now_utc(), counts=self.outcome.counts(),
                                  interrupted=self.outcome.interrupted)
                        break

        store.update_matrix(exp.name, update)
        if start:
            (store.matrix_dir(exp.name) / "experiment.toml").write_text(exp.text)
