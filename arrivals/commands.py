"""``loadgen workload fit``: fit a trace's arrivals and lengths and save the model (JSON).

    loadgen workload fit BurstGPT_1.csv --trace-format burstgpt --output model.json
    loadgen workload fit AzureLLMInferenceTrace_conv.csv --trace-format azure --plot fit.png
    loadgen plan --from-fit model.json --request-rate 5 --length-scale 0.5 -o w.jsonl

Registered through ``loadgen.cli.COMMAND_MODULES`` (``register(subparsers)``).
"""

from __future__ import annotations

import argparse
import sys

TRACE_FORMATS = ("burstgpt", "azure", "mooncake", "csv", "jsonl")


def register(subparsers) -> None:
    """Add ``loadgen workload fit``."""
    w = subparsers.add_parser("workload", help="workload tools: fit a model to a trace",
                              description="Tools on workloads (docs/arrivals.md).")
    wsub = w.add_subparsers(dest="workload_command", required=True, metavar="TOOL")
    f = wsub.add_parser("fit", help="fit inter-arrival and length distributions of a trace",
                        description="Fit exponential, gamma, Weibull and lognormal "
                        "inter-arrival times (best by AIC, with KS distances) and the "
                        "input/output length distributions with their correlation; print the "
                        "fit and save it as JSON for --from-fit.")
    f.add_argument("trace", metavar="TRACE", help="trace file")
    f.add_argument("--trace-format", required=True, choices=list(TRACE_FORMATS))
    f.add_argument("--trace-columns", default=None, metavar="time=COL,input=COL,output=COL",
                   help="column mapping of a csv/jsonl trace")
    f.add_argument("--trace-time-unit", default="s", choices=["s", "ms", "us", "ns", "iso"])
    f.add_argument("--output", "-o", default=None, metavar="MODEL.json",
                   help="write the fitted model here (JSON)")
    f.add_argument("--json", action="store_true", help="print the model JSON, not the table")
    f.add_argument("--seed", type=int, default=0, help="seed of the real-vs-fitted comparison")
    f.add_argument("--plot", default=None, metavar="FILE.png",
                   help="draw the trace's real vs fitted inter-arrival and length "
                   "distributions (needs matplotlib: the report extra)")
    f.set_defaults(handler=cmd_fit)


def cmd_fit(ns: argparse.Namespace) -> int:
    """Fit, print and (optionally) save; exit 1 with a message on a bad trace."""
    import orjson

    from arrivals.fit import compare, fit_trace, format_model
    from arrivals.traces import parse_columns, read_trace

    try:
        cols = parse_columns(ns.trace_columns) if ns.trace_columns else None
        tr = read_trace(ns.trace, ns.trace_format, columns=cols, time_unit=ns.trace_time_unit)
        model = fit_trace(tr)
        cmp = compare(tr, model, seed=ns.seed)
    except (OSError, ValueError) as e:
        print(f"loadgen workload fit: {e}", file=sys.stderr)
        return 1
    if ns.json:
        print(orjson.dumps({**model.to_dict(), "comparison": cmp},
                           option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_model(model, cmp))
    if ns.output:
        model.save(ns.output)
        print(f"wrote the fitted model to {ns.output}", file=sys.stderr)
    if ns.plot:
        try:
            from arrivals.fit_plot import plot_fit

            png = plot_fit(tr, model, seed=ns.seed)
        except ImportError as e:
            print(f"loadgen workload fit: --plot needs matplotlib "
                  f"(pip install 'llm-loadgen[report]'): {e}", file=sys.stderr)
            return 1
        from pathlib import Path

        Path(ns.plot).write_bytes(png)
        print(f"wrote the real-vs-fitted plot to {ns.plot}", file=sys.stderr)
    return 0
