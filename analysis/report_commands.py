"""Sub-commands ``loadgen sweep``, ``loadgen compare`` and ``loadgen report`` (docs/report.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadgen.flags import UsageError, _positive_float, _positive_int

EXIT_OK, EXIT_ERROR, EXIT_INVALID = 0, 1, 3


def parse_slo(s: str | None) -> dict[str, float] | None:
    """``"ttft_p99_ms=500,e2e_p99_ms=2000"`` -> {"ttft_p99_ms": 500.0, ...} (curves.SLO_KEYS)."""
    from analysis.curves import check_slo_keys

    if not s:
        return None
    out: dict[str, float] = {}
    for item in s.split(","):
        k, sep, v = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[k.strip()] = float(v)
        except ValueError:
            raise UsageError(f"--slo item {item!r}: expected METRIC_pP_ms=NUMBER, e.g. "
                             "ttft_p99_ms=500") from None
    try:
        check_slo_keys(out)
    except ValueError as e:
        raise UsageError(f"--slo: {e}") from None
    return out


def register(sub: argparse._SubParsersAction) -> None:
    from loadgen.cli import add_run_arguments

    sw = sub.add_parser(
        "sweep", help="run a series of request rates against one endpoint (latency-vs-load)",
        description="Run one open-loop run per request rate under one sweep directory "
        "(RESULT_DIR/sweep-<time>/rate-<R>/ and sweep.json); stop early when the server is "
        "saturated. --rates auto probes the saturation throughput first (docs/report.md).")
    add_run_arguments(sw)
    g = sw.add_argument_group("sweep")
    g.add_argument("--rates", required=True, help="comma-separated request rates (req/s), or "
                   "'auto': probe the saturation throughput, then run --auto-fractions of it")
    g.add_argument("--auto-fractions", default="0.1,0.3,0.5,0.7,0.8,0.9,1.0,1.1",
                   help="fractions of the saturation throughput run by --rates auto")
    g.add_argument("--probe-requests", type=_positive_int("--probe-requests"), default=128,
                   help="size of the saturation probe burst (default 128; several times the "
                   "server's max batch size)")
    g.add_argument("--probe-rate", type=_positive_float("--probe-rate"), default=None,
                   help="send the probe at this rate instead of all at t=0")
    g.add_argument("--duration-per-rate", type=_positive_float("--duration-per-rate"),
                   default=20.0, help="seconds of load per rate when --num-prompts is not "
                   "given (at least 20 requests; default 20)")
    g.add_argument("--max-error-fraction", type=float, default=0.05,
                   help="stop when more than this fraction of a rate's requests fail (0.05)")
    g.add_argument("--min-throughput-ratio", type=float, default=0.85,
                   help="stop when achieved/offered throughput falls below this (0.85)")
    g.add_argument("--max-latency-growth", type=float, default=2.0,
                   help="stop when median E2E of a run's last third exceeds this multiple of "
                   "its first third's, significantly (2.0)")
    g.add_argument("--no-stop", action="store_true", help="run every rate even when saturated")
    g.add_argument("--quiet", action="store_true", help="print only the final table")
    g.add_argument("--report", action="store_true", help="write the HTML report at the end")
    g.add_argument("--slo", default=None, help="SLO for the knee and goodput, e.g. "
                   "ttft_p99_ms=500,e2e_p99_ms=5000 (with --report)")
    sw.set_defaults(handler=cmd_sweep)

    cp = sub.add_parser(
        "compare", help="compare two or more runs or sweeps on the same work",
        description="Differences of the main latency percentiles of runs B, C ... against run A, "
        "with bootstrap 95%% confidence intervals and Mann-Whitney U tests, overall and per "
        "(log2 input, log2 output) length bucket. Sweeps are compared rate by rate.")
    cp.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories (>= 2); "
                    "the first is the baseline")
    cp.add_argument("--bootstrap", type=_positive_int("--bootstrap"), default=1000,
                    help="bootstrap resamples (default 1000)")
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--json", action="store_true", help="print the comparison JSON")
    cp.add_argument("--output", "-o", default=None, help="also write the JSON to this file")
    cp.set_defaults(handler=cmd_compare)

    rp = sub.add_parser(
        "report", help="one self-contained HTML report of a run or a sweep",
        description="Write report.html (self-contained, viewable offline), report.json (every "
        "number shown) and the PNG plots for a run or sweep directory.")
    rp.add_argument("dir", metavar="RUN_OR_SWEEP_DIR")
    rp.add_argument("--output-dir", "-o", default=None,
                    help="where to write (default: DIR/report/)")
    rp.add_argument("--slo", default=None, help="SLO thresholds, e.g. ttft_p99_ms=500,"
                    "e2e_p99_ms=5000,itl_p99_ms=50 (for the knee, goodput and length analysis)")
    rp.set_defaults(handler=cmd_report)


def cmd_sweep(ns: argparse.Namespace) -> int:
    from analysis.curves import curves_of, render_curves
    from analysis.sweep import load_sweep, run_sweep
    from loadgen.preflight import PreflightError

    slo = parse_slo(ns.slo)
    log = (lambda *a: None) if ns.quiet else (lambda m: print(m, file=sys.stderr))
    try:
        root, meta = run_sweep(ns, ["loadgen", *sys.argv[1:]], log=log)
    except PreflightError as e:
        print(f"loadgen sweep: preflight failed: {e}", file=sys.stderr)
        return EXIT_ERROR
    except FileExistsError as e:
        print(f"loadgen sweep: {e.filename} already exists; choose another --run-name",
              file=sys.stderr)
        return EXIT_ERROR
    except (OSError, ValueError) as e:
        if isinstance(e, UsageError):
            raise
        print(f"loadgen sweep: {e}", file=sys.stderr)
        return EXIT_ERROR
    sw = load_sweep(root)
    print(render_curves(curves_of(sw, slo)))
    if meta["stopped"]["early"]:
        print(f"stopped early at {meta['stopped']['at_rate']:g} req/s: "
              + "; ".join(meta["stopped"]["reasons"]))
    if ns.report:
        from analysis.report import write_report

        out = write_report(root, slo=slo)
        print(f"report: {out}")
    print(f"sweep directory: {root}")
    return EXIT_OK if all(r["exit_code"] == 0 for r in meta["runs"]) else EXIT_INVALID


def cmd_compare(ns: argparse.Namespace) -> int:
    import orjson

    from analysis.compare import compare_dirs, render_comparison

    if len(ns.dirs) < 2:
        raise UsageError("compare needs at least two run or sweep directories")
    try:
        res = compare_dirs([Path(d) for d in ns.dirs], n_boot=ns.bootstrap, seed=ns.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"loadgen compare: {e}", file=sys.stderr)
        return EXIT_ERROR
    blob = orjson.dumps(res, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    if ns.output:
        Path(ns.output).write_bytes(blob)
    print(blob.decode() if ns.json else render_comparison(res))
    return EXIT_OK


def cmd_report(ns: argparse.Namespace) -> int:
    from analysis.report import write_report

    slo = parse_slo(ns.slo)
    try:
        out = write_report(Path(ns.dir), output_dir=Path(ns.output_dir) if ns.output_dir else None,
                           slo=slo)
    except (FileNotFoundError, ValueError) as e:
        print(f"loadgen report: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(f"report: {out}")
    return EXIT_OK
