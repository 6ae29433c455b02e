"""``loadgen matrix plan | run | report FILE`` (docs/experiments.md).

Exit codes: 0 every cell complete (or skipped: a runtime not installed here), 1 some cell
failed (each is recorded with its cause) or the report could not be written, 2 the experiment
file is invalid (every problem printed with its key and line), 130/143 interrupted by
SIGINT/SIGTERM (run it again to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "matrix", help="run an experiment matrix: runtimes x models x batch sizes x workloads",
        description="Expand, run (unattended, resumable) and report an experiment file: the "
        "Cartesian product of runtimes, models, batch sizes, parallelism and workloads, each "
        "cell a sweep over the load (docs/experiments.md).")
    msub = m.add_subparsers(dest="matrix_command", required=True, metavar="SUBCOMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", metavar="FILE", help="experiment file (TOML)")
        p.add_argument("--store", default=None, metavar="DIR",
                       help="results store (default: the file's experiment.store)")

    p = msub.add_parser("plan", help="print the expanded cells and an estimate of their time",
                        description="Validate the file, expand it into cells (after exclusions "
                        "and overrides) and print them with their status in the store and an "
                        "estimate of the time the remaining cells take. Runs nothing.")
    common(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--show-excluded", action="store_true", help="list every excluded cell")
    p.set_defaults(handler=cmd_plan)

    r = msub.add_parser("run", help="run the cells (skipping complete ones), then index and report",
                        description="Run every cell not yet complete in the store: each server "
                        "configuration is started once, its cells run, then it is stopped. A "
                        "failed cell is recorded with its cause and the matrix goes on. Killed "
                        "and restarted, it skips the complete cells and re-runs partial ones.")
    common(r)
    r.add_argument("--no-report", dest="report", action="store_false",
                   help="do not write the matrix report at the end")
    r.add_argument("--quiet", action="store_true", help="print only the final lines")
    r.set_defaults(handler=cmd_run)

    rp = msub.add_parser("report", help="write the matrix report (one self-contained HTML)",
                         description="Capacity at the SLO (the knee) per cell as a table and a "
                         "heat map, latency-vs-load curves overlaid per runtime (or another "
                         "axis), and the length-conditioned fits side by side.")
    common(rp)
    rp.add_argument("--output-dir", "-o", default=None,
                    help="where to write (default: STORE/matrices/NAME/report/)")
    rp.add_argument("--slo", default=None, help="SLO thresholds instead of the file's, e.g. "
                    "ttft_p99_ms=500,e2e_p99_ms=5000 (cells are not re-run)")
    rp.add_argument("--heatmap", default=None, metavar="AXIS,AXIS",
                    help="the heat map's two axes (default: the file's report.heatmap)")
    rp.add_argument("--overlay", default=None, metavar="AXIS",
                    help="overlay curves per this axis (default: the file's report.overlay)")
    rp.set_defaults(handler=cmd_report)


def _load(ns: argparse.Namespace):
    from loadgen.matrix.cells import expand
    from loadgen.matrix.spec import load_experiment
    from loadgen.matrix.store import Store

    exp = load_experiment(ns.file)
    expansion = expand(exp)
    store = Store(ns.store or exp.spec.experiment.store)
    return exp, expansion, store


def runtime_status(expansion) -> dict[str, dict[str, Any]]:
    """Per runtime of the plan: is it installed and available here (cheap checks only)."""
    from servers import registry

    out: dict[str, dict[str, Any]] = {}
    for c in expansion.cells:
        name = c.axes["runtime"]
        if name in out:
            continue
        srv = c.config["server"]
        try:
            rt = registry.create(name, srv["options"])
        except registry.UnknownRuntime as e:
            out[name] = {"available": False, "cause": str(e)}
            continue
        except Exception as e:  # noqa: BLE001
            out[name] = {"available": False, "cause": f"{type(e).__name__}: {e}"}
            continue
        ok, why = registry.availability(rt)
        if not ok and c.prepare and callable(getattr(rt, "prepare", None)):
            out[name] = {"available": True, "cause": f"will be prepared first "
                         f"(prepare = true): {why.splitlines()[0] if why else ''}"}
        else:
            out[name] = {"available": ok, "cause": why or None}
    return out


def plan_data(exp, expansion, store) -> dict[str, Any]:
    from loadgen.matrix import estimate

    rts = runtime_status(expansion)
    cells = []
    todo_groups: dict[str, list] = {}
    for i, c in enumerate(expansion.cells):
        st = store.state(c.id) if store.root.is_dir() else "pending"
        runnable = st != "complete" and c.skip is None and rts[c.axes["runtime"]]["available"]
        will = st if st == "complete" else ("skip" if not runnable else "run")
        est = estimate.cell_s(c)
        cells.append({"n": i + 1, "cell_id": c.id, "label": c.label, "axes": c.axes,
                      "rates": c.config["load"]["rates"], "estimate_s": est, "status": st,
                      "will": will, "skip": c.skip or (None if rts[c.axes["runtime"]]["available"]
                                                       else rts[c.axes["runtime"]]["cause"])})
        if will == "run":
            todo_groups.setdefault(c.server_key, []).append(c)
    return {
        "experiment": exp.name, "file": str(exp.path), "store": str(store.root),
        "cells": cells, "server_configurations": len(expansion.groups()),
        "excluded": [{"label": x.label, "reason": x.reason, "rule": x.rule}
                     for x in expansion.excluded],
        "runtimes": rts,
        "to_run": sum(len(g) for g in todo_groups.values()),
        "estimate_s": estimate.total_s(list(todo_groups.values())),
        "estimate_all_s": estimate.total_s(expansion.groups()),
    }


def render_plan(d: dict[str, Any], show_excluded: bool = False) -> str:
    from loadgen.matrix.estimate import human

    lines = [f"experiment {d['experiment']} ({d['file']}): {len(d['cells'])} cells in "
             f"{d['server_configurations']} server configurations, {len(d['excluded'])} "
             f"excluded; store {d['store']}"]
    head = (f"{'#':>4}  {'cell':16}  {'runtime':10} {'model':16} {'batch':>5} {'tp':>3} "
            f"{'pp':>3} {'workload':12} {'rep':>3}  {'rates':14} {'est':>7}  status")
    lines += [head, "-" * len(head)]
    for c in d["cells"]:
        a = c["axes"]
        rates = c["rates"] if c["rates"] == "auto" else ",".join(f"{r:g}" for r in c["rates"])
        st = c["status"] if c["will"] != "skip" or c["status"] == "complete" else \
            f"skip ({c['skip'].splitlines()[0][:60] if c['skip'] else c['status']})"
        lines.append(f"{c['n']:>4}  {c['cell_id']:16}  {a['runtime']:10} {a['model']:16} "
                     f"{a['batch_size']:>5} {a['tp']:>3} {a['pp']:>3} {a['workload']:12} "
                     f"{a['repetition']:>3}  {rates:14} {human(c['estimate_s']):>7}  {st}")
    if d["excluded"]:
        by: dict[str, int] = {}
        for x in d["excluded"]:
            by[x["reason"]] = by.get(x["reason"], 0) + 1
        lines.append("excluded:")
        lines += [f"  {n:>4} cells: {reason}" for reason, n in by.items()]
        if show_excluded:
            lines += [f"    {x['label']}  (exclude[{x['rule']}])" for x in d["excluded"]]
    lines.append("runtimes: " + "; ".join(
        f"{k} {'ok' if v['available'] else 'NOT AVAILABLE'}"
        + (f" ({v['cause'].splitlines()[0][:90]})" if v.get("cause") else "")
        for k, v in d["runtimes"].items()))
    done = sum(1 for c in d["cells"] if c["status"] == "complete")
    lines.append(f"estimate: {human(d['estimate_s'])} for the {d['to_run']} cells to run "
                 f"({done} complete already; {human(d['estimate_all_s'])} for all cells); "
                 "an upper bound for the load, a guess for start-up and overheads")
    return "\n".join(lines)


def cmd_plan(ns: argparse.Namespace) -> int:
    from loadgen.matrix.spec import ExperimentError

    try:
        exp, expansion, store = _load(ns)
    except ExperimentError as e:
        print(str(e), file=sys.stderr)
        return EXIT_INVALID
    d = plan_data(exp, expansion, store)
    if ns.json:
        print(orjson.dumps(d, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_plan(d, ns.show_excluded))
    return EXIT_OK


def cmd_run(ns: argparse.Namespace) -> int:
    from loadgen.matrix.runner import MatrixRunner
    from loadgen.matrix.spec import ExperimentError

    try:
        exp, expansion, store = _load(ns)
    except ExperimentError as e:
        print(str(e), file=sys.stderr)
        return EXIT_INVALID

    def log(msg: str) -> None:
        if not ns.quiet:
            print(msg, file=sys.stderr, flush=True)

    log(f"matrix {exp.name}: {len(expansion.cells)} cells, {len(expansion.groups())} server "
        f"configurations, {len(expansion.excluded)} excluded; store {store.root}")
    runner = MatrixRunner(exp, expansion, store, log=log, argv=["loadgen", *sys.argv[1:]])
    out = runner.run()
    counts = out.counts()
    print(f"matrix {exp.name}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
          + (f"; interrupted by {out.interrupted}: run the same command again to resume"
             if out.interrupted else ""))
    failed = [c for c in expansion.cells if out.statuses.get(c.id) == "failed"]
    for c in failed:
        rec = store.read_cell(c.id) or {}
        cause = (rec.get("cause") or "").splitlines()
        print(f"  failed: {c.label} {c.id}: {cause[0] if cause else '?'}")
    print(f"catalog: {store.catalog_path}  (loadgen results list --store {store.root})")
    code = EXIT_SIGNAL.get(out.interrupted or "", 130) if out.interrupted else \
        (EXIT_FAILED if failed else EXIT_OK)
    if ns.report and not out.interrupted:
        try:
            path = _write_report(exp, expansion, store, None, None, None, None)
            print(f"report: {path}")
        except Exception as e:  # noqa: BLE001 - the runs are safe on disk; say why, exit 1
            print(f"loadgen matrix run: the report could not be written: {type(e).__name__}: "
                  f"{e} (loadgen matrix report {ns.file} retries)", file=sys.stderr)
            code = code or EXIT_FAILED
    return code


def _write_report(exp, expansion, store, out_dir, slo, heatmap, overlay) -> Path:
    from analysis.matrix_report import write_matrix_report

    rs = exp.spec.report
    return write_matrix_report(
        store, exp, expansion, output_dir=out_dir, slo=slo,
        heatmap=heatmap or list(rs.heatmap), overlay=overlay or rs.overlay, fits=rs.fits)


def cmd_report(ns: argparse.Namespace) -> int:
    from analysis.report_commands import parse_slo
    from loadgen.flags import UsageError
    from loadgen.matrix.schema import AXES
    from loadgen.matrix.spec import ExperimentError

    try:
        exp, expansion, store = _load(ns)
    except ExperimentError as e:
        print(str(e), file=sys.stderr)
        return EXIT_INVALID
    heat = [a.strip() for a in ns.heatmap.split(",")] if ns.heatmap else None
    if heat and (len(heat) != 2 or any(a not in AXES for a in heat)):
        raise UsageError(f"--heatmap takes two axes of {', '.join(AXES)}, got {ns.heatmap!r}")
    if ns.overlay and ns.overlay not in AXES:
        raise UsageError(f"--overlay takes one of {', '.join(AXES)}, got {ns.overlay!r}")
    try:
        path = _write_report(exp, expansion, store, Path(ns.output_dir) if ns.output_dir else None,
                             parse_slo(ns.slo), heat, ns.overlay)
    except (FileNotFoundError, ValueError) as e:
        if isinstance(e, UsageError):
            raise
        print(f"loadgen matrix report: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"report: {path}")
    return EXIT_OK
