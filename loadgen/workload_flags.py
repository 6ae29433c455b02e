"""Workload flags shared by ``loadgen run`` and ``loadgen plan``, and the Workload they describe."""

from __future__ import annotations

import argparse
import math

from loadgen.flags import UsageError, _positive_float, _positive_int, _ratio

TRACE_FORMATS = ("burstgpt", "azure", "mooncake", "csv", "jsonl")  # arrivals.traces.FORMATS


def add_workload_arguments(w) -> None:
    """Flags that build a workload (shared by ``loadgen run`` and ``loadgen plan``)."""
    w.add_argument("--dataset-name", default="random", choices=["random"],
                   help="prompt source: random (synthetic word prompts of the given lengths)")
    w.add_argument("--num-prompts", type=_positive_int("--num-prompts"), default=None,
                   help="number of requests (default 1000; with --trace or --plan: a cap, "
                   "default all)")
    w.add_argument("--request-rate", type=_positive_float("--request-rate", allow_inf=True),
                   default=math.inf, help="mean request rate in requests/s (default inf: all at "
                   "t=0, as vllm bench serve); the schedule is open loop")
    w.add_argument("--burstiness", type=_positive_float("--burstiness"), default=1.0,
                   help="gamma shape k of inter-arrival times: CV = 1/sqrt(k); 1 = Poisson "
                   "(default), < 1 burstier, > 1 smoother")
    w.add_argument("--arrival", choices=["poisson", "gamma", "constant"], default=None,
                   help="arrival process (default: poisson, or gamma when --burstiness != 1)")
    w.add_argument("--random-input-len", type=_positive_int("--random-input-len"), default=1024,
                   help="input length in tokens (default 1024)")
    w.add_argument("--random-output-len", type=_positive_int("--random-output-len"), default=128,
                   help="output length (max_tokens) per request (default 128)")
    w.add_argument("--random-range-ratio", type=_ratio, default=0.0,
                   help="lengths uniform in [len*(1-r), len*(1+r)] (default 0: fixed)")
    w.add_argument("--seed", type=int, default=0, help="seed of the schedule, lengths and prompts")
    w.add_argument("--trace", default=None, metavar="FILE",
                   help="replay a request trace instead of the random dataset (docs/arrivals.md)")
    w.add_argument("--trace-format", default=None, choices=list(TRACE_FORMATS),
                   help="format of --trace: burstgpt, azure, mooncake, or csv/jsonl with "
                   "--trace-columns")
    w.add_argument("--trace-columns", default=None, metavar="time=COL,input=COL,output=COL",
                   help="column mapping of a csv/jsonl trace (optional keys: model, log_type, "
                   "session_id)")
    w.add_argument("--trace-time-unit", default="s", choices=["s", "ms", "us", "ns", "iso"],
                   help="unit of the time column of a csv/jsonl trace (default s)")
    w.add_argument("--trace-filter", action="append", default=[], metavar="KEY=VALUE",
                   help="keep only requests with model=NAME, log_type=NAME or success=true|false; "
                   "repeatable (applied first)")
    w.add_argument("--trace-window", default=None, metavar="START:END",
                   help="keep the requests in [START, END) seconds from the trace's first one "
                   "(either side may be empty), re-timed to start at 0")
    w.add_argument("--trace-speedup", type=_positive_float("--trace-speedup"), default=None,
                   metavar="X", help="divide every trace time by X (X=2: twice the rate)")
    w.add_argument("--trace-rate", type=_positive_float("--trace-rate"), default=None,
                   metavar="R", help="thin (or superpose time-shifted copies of) the trace to a "
                   "mean rate of R req/s, keeping its bursts (applied last)")
    w.add_argument("--trace-keep-failed", action="store_true",
                   help="replay the trace's failed (0-token) requests too, clipped to 1 token "
                   "(default: drop them and record how many)")
    w.add_argument("--plan", default=None, metavar="FILE",
                   help="replay a plan written by `loadgen plan` exactly (other workload flags "
                   "are ignored, except --num-prompts as a cap)")


def _trace_filters(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        k, sep, v = item.partition("=")
        k, v = k.strip(), v.strip()
        if not sep or k not in ("model", "log_type", "success"):
            raise UsageError(f"--trace-filter {item!r}: expected model=NAME, log_type=NAME or "
                             "success=true|false")
        if k == "success":
            if v.lower() not in ("true", "false"):
                raise UsageError(f"--trace-filter success={v!r}: expected true or false")
            out[k] = v.lower() == "true"
        else:
            out.setdefault(k, []).append(v)
    return out


def _trace_window(s: str) -> tuple[float | None, float | None]:
    a, sep, b = s.partition(":")
    try:
        if not sep:
            raise ValueError
        return (float(a) if a.strip() else None, float(b) if b.strip() else None)
    except ValueError:
        raise UsageError(f"--trace-window must be START:END in seconds (either may be empty), "
                         f"got {s!r}") from None


def build_workload(ns: argparse.Namespace):
    """The Workload the workload flags describe: a plan, a trace, or the random dataset.

    Trace transforms apply in this order: --trace-filter, --trace-window, --trace-speedup,
    --trace-rate; then failed requests are dropped (unless --trace-keep-failed) and
    --num-prompts caps the count.
    """
    if ns.plan:
        if ns.trace:
            raise UsageError("--plan and --trace are exclusive: a plan already holds its requests")
        from arrivals.plan import read_plan

        wl = read_plan(ns.plan)
        if ns.num_prompts is not None and ns.num_prompts < len(wl):
            from arrivals.workload import Workload

            n = ns.num_prompts
            wl = Workload(t_intended=wl.t_intended[:n], prompts=wl.prompts[:n],
                          input_tokens=wl.input_tokens[:n], output_tokens=wl.output_tokens[:n],
                          dataset=wl.dataset,
                          item_ids=None if wl.item_ids is None else wl.item_ids[:n],
                          description={**wl.description, "plan": str(ns.plan), "capped_to": n})
        return wl
    if ns.trace:
        from arrivals import transforms as tf
        from arrivals.trace_workload import trace_workload
        from arrivals.traces import parse_columns, read_trace

        if not ns.trace_format:
            raise UsageError("--trace needs --trace-format (burstgpt, azure, mooncake, csv, jsonl)")
        try:
            cols = parse_columns(ns.trace_columns) if ns.trace_columns else None
        except ValueError as e:
            raise UsageError(f"--trace-columns: {e}") from None
        tr = read_trace(ns.trace, ns.trace_format, columns=cols, time_unit=ns.trace_time_unit)
        filters = _trace_filters(ns.trace_filter)
        if filters:
            tr = tf.filter_rows(tr, **filters)
        if ns.trace_window:
            tr = tf.window(tr, *_trace_window(ns.trace_window))
        if ns.trace_speedup:
            tr = tf.speedup(tr, ns.trace_speedup)
        if ns.trace_rate:
            tr = tf.to_rate(tr, ns.trace_rate, seed=ns.seed)
        return trace_workload(tr, seed=ns.seed, drop_failed=not ns.trace_keep_failed,
                              max_requests=ns.num_prompts)
    from arrivals.workload import synthetic_workload

    process = ns.arrival or ("gamma" if ns.burstiness != 1.0 else "poisson")
    return synthetic_workload(
        num_requests=ns.num_prompts or 1000, request_rate=ns.request_rate, process=process,
        burstiness=ns.burstiness, input_len=ns.random_input_len, output_len=ns.random_output_len,
        range_ratio=ns.random_range_ratio, seed=ns.seed,
    )
