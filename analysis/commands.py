"""``loadgen analyze RUN_DIR``: per-run statistics, written to RUN_DIR/analysis.json.

Registered through ``loadgen.cli.COMMAND_MODULES`` (see the docstring of loadgen/cli.py).
Exit codes: 0 done, 1 unreadable run directory, 2 bad flags.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from analysis.load import load_run
from analysis.run_analysis import analyze
from analysis.slo import parse_slo
from analysis.window import parse_window
from loadgen.flags import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze", help="length-conditioned latency, percentile CIs, fits, SLO/goodput of a run",
        description="Analyse a run directory: percentiles with distribution-free confidence "
        "intervals, latency per (input, output) length bucket, fitted per-token costs, SLO "
        "attainment and goodput, streaming smoothness. Writes RUN_DIR/analysis.json "
        "(docs/analysis.md).")
    p.add_argument("run_dir", help="a run directory written by loadgen run")
    p.add_argument("--slo", default=None, metavar="KEY=MS,...",
                   help="thresholds in ms, e.g. ttft_ms=500,tpot_ms=50,e2e_ms=10000; also "
                   "itl_ms, and length-aware e2e_base_ms+e2e_per_output_ms, "
                   "ttft_base_ms+ttft_per_input_ms")
    p.add_argument("--window", default=None, metavar="START:END",
                   help="steady window in seconds of t_intended (either side may be empty), "
                   "or 'all'; default: detected (warm-up and drain excluded)")
    p.add_argument("--target-tpot-ms", type=float, default=None,
                   help="token cadence for the fluidity index and stall ratio (default: the "
                   "SLO's tpot_ms/itl_ms, else 1.5 x the median TPOT)")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples for the fit "
                   "CIs (default 200)")
    p.add_argument("--json", action="store_true", help="print the analysis JSON")
    p.set_defaults(handler=cmd_analyze)


def cmd_analyze(ns: argparse.Namespace) -> int:
    try:
        slo = parse_slo(ns.slo) if ns.slo else None
        window = ns.window
        if window is not None and window != "all":
            window = parse_window(window)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        run = load_run(ns.run_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"loadgen analyze: {e}", file=sys.stderr)
        return 1
    res = analyze(run, slo=slo, window=window, n_boot=ns.n_boot,
                  target_tpot_ms=ns.target_tpot_ms)
    data = orjson.dumps(res, option=orjson.OPT_INDENT_2)
    (run.path / "analysis.json").write_bytes(data)
    print(data.decode() if ns.json else render_analysis(res))
    return 0


def _f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def render_analysis(a: dict[str, Any]) -> str:
    """The human-readable table of an ``analyze`` result."""
    w = a["window"]
    lines = [f"window: t_intended in [{_f(w['start_s'], 2)}, {_f(w['end_s'], 2)}] s "
             f"({w['method']}), {w['n_requests']} requests"]
    hdr = f"{'latency (ms), 95% CI':<16}" + "".join(f"{k:>27}" for k in ("p50", "p90", "p99"))
    lines += ["", hdr, "-" * len(hdr)]
    for metric, blk in a["percentiles_ci"].items():
        cells = []
        for k in ("p50", "p90", "p99"):
            c = blk[k]
            cells.append(f"{_f(c['value_ms'])} [{_f(c['lo_ms'])}, {_f(c['hi_ms'])}]")
        n = blk["p50"]["n"]
        lines.append(f"{metric:<16}" + "".join(f"{c:>27}" for c in cells) + f"  n={n}")
    lb = a["length_buckets"]
    hdr = (f"{'input':>11} {'output':>11} {'n':>6} {'ttft p50':>9} {'p99':>8} {'e2e p50':>9} "
           f"{'p99':>8} {'itl p50':>8} {'p99':>7} {'tok p50':>8} {'p99':>7}")
    lines += ["", "by length (tokens, [lo, hi)), ms; itl: between chunks, tok: per token",
              hdr, "-" * len(hdr)]
    for c in lb["cells"]:
        lines.append(
            f"{c['input_lo']:>5}-{c['input_hi']:<5} {c['output_lo']:>5}-{c['output_hi']:<5} "
            f"{c['n']:>6} {_f(c['ttft_p50_ms']):>9} {_f(c['ttft_p99_ms']):>8} "
            f"{_f(c['e2e_p50_ms']):>9} {_f(c['e2e_p99_ms']):>8} {_f(c['itl_p50_ms'], 2):>8} "
            f"{_f(c['itl_p99_ms'], 2):>7} {_f(c.get('itl_token_p50_ms'), 2):>8} "
            f"{_f(c.get('itl_token_p99_ms'), 2):>7}")
    lines += ["", "fits (median regression, 95% bootstrap CI):"]
    for name, f in a["fits"].items():
        ci = f["ci95"]
        terms = [f"{k} = {_f(v, 4)} [{_f(ci[k][0], 4)}, {_f(ci[k][1], 4)}]"
                 for k, v in f.items() if k in ci]
        lines.append(f"  {name:<5} n={f['n']}: " + "; ".join(terms))
    s = a["slo"]
    if s is not None:
        th = ", ".join(f"{k}={v:g}" for k, v in s["thresholds"].items())
        att = "-" if s["attainment"] is None else f"{100 * s['attainment']:.1f} %"
        lines += ["", f"SLO ({th}): attainment {att}, goodput {_f(s['goodput_rps'], 2)} req/s",
                  "  violations: " + ", ".join(f"{k}={v}" for k, v in
                                                s["violations_by_metric"].items())]
    sm = a["smoothness"]
    lines += ["", f"smoothness (target TPOT {_f(sm['target_tpot_ms'], 2)} ms): fluidity index "
              f"{_f(sm['fluidity_index'], 3)}, stall ratio {_f(sm['stall_ratio'], 3)}"]
    tpc = a.get("tokens_per_chunk") or {}
    if tpc:
        lines.append(f"tokens per chunk: {tpc['server']} requests counted by the server, "
                     f"{tpc['estimated']} estimated, {tpc['one_per_chunk']} one per chunk")
        if tpc.get("note"):
            lines.append(f"note: {tpc['note']}")
    return "\n".join(lines)
