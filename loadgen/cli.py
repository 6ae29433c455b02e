"""The command line: ``loadgen run | serve | demo | summary``.

Flags of ``loadgen run`` follow ``vllm bench serve`` where a user would expect them, so its
command lines keep working (docs/cli.md has the mapping).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from loadgen.clients.openai import BACKEND_ENDPOINTS, ENDPOINTS, ClientConfig

TRACE_FORMATS = ("burstgpt", "azure", "mooncake", "csv", "jsonl")  # arrivals.traces.FORMATS


class UsageError(ValueError):
    """A flag has a bad value; the message names the flag."""


def _positive_int(flag: str):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number, got {s!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 1, got {v}")
        return v
    return parse


def _positive_float(flag: str, allow_inf: bool = False):
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {s!r}") from None
        if math.isnan(v) or v <= 0 or (math.isinf(v) and not allow_inf):
            extra = " or inf" if allow_inf else ""
            raise argparse.ArgumentTypeError(f"{flag} must be a number > 0{extra}, got {s!r}")
        return v
    return parse


def _ratio(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--random-range-ratio must be a number, got {s!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"--random-range-ratio must be in [0, 1), got {s!r}")
    return v


def _header(s: str) -> tuple[str, str]:
    if "=" not in s and ":" not in s:
        raise argparse.ArgumentTypeError(f"--header must be KEY=VALUE or 'KEY: VALUE', got {s!r}")
    sep = "=" if "=" in s and (":" not in s or s.index("=") < s.index(":")) else ":"
    k, v = s.split(sep, 1)
    return k.strip(), v.strip()


def _json_obj(s: str) -> dict:
    import orjson

    try:
        v = orjson.loads(s)
    except orjson.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--extra-body must be a JSON object: {e}") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("--extra-body must be a JSON object like '{\"temperature\": 0}'")
    return v


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


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("endpoint")
    g.add_argument("--base-url", help="server URL without /v1, e.g. http://127.0.0.1:8000 "
                   "(default: http://HOST:PORT from --host/--port)")
    g.add_argument("--host", default="127.0.0.1", help="server host when --base-url is not given")
    g.add_argument("--port", type=int, default=8000, help="server port when --base-url is not given")
    g.add_argument("--endpoint", default=None, help="API path: /v1/completions (default) or "
                   "/v1/chat/completions")
    g.add_argument("--backend", default=None, choices=sorted(BACKEND_ENDPOINTS),
                   help="vllm bench serve compatibility: openai -> /v1/completions, "
                   "openai-chat -> /v1/chat/completions (--endpoint wins if both are given)")
    g.add_argument("--model", required=True, help="model name sent in each request; must be "
                   "one of the server's /v1/models")
    g.add_argument("--served-model-name", default=None, help="send this name in requests "
                   "instead of --model (as vllm bench serve)")
    g.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"),
                   help="bearer token (default: $OPENAI_API_KEY); never written to disk")
    g.add_argument("--header", action="append", type=_header, default=[], metavar="KEY=VALUE",
                   help="extra HTTP header, repeatable (values of auth headers are redacted in the manifest)")
    g.add_argument("--no-stream", dest="stream", action="store_false",
                   help="ask for whole responses instead of SSE streams (TTFT then equals E2E)")
    g.add_argument("--no-usage", dest="include_usage", action="store_false",
                   help="do not send stream_options.include_usage (for servers that reject it); "
                   "output tokens are then counted as streamed chunks")
    g.add_argument("--ignore-eos", action="store_true", help="force exactly the requested output "
                   "length: sends ignore_eos=true and min_tokens=max_tokens (vLLM, and others)")
    g.add_argument("--extra-body", type=_json_obj, default={}, metavar="JSON",
                   help="JSON object merged into every request body, e.g. '{\"temperature\": 0}'")
    g.add_argument("--timeout", "--request-timeout", dest="timeout", type=_positive_float("--timeout"),
                   default=600.0, help="per-request timeout in seconds (default 600); "
                   "requests that exceed it are recorded as 'timeout'")
    g.add_argument("--skip-preflight", action="store_true",
                   help="do not check /v1/models and send a test request before the run")

    add_workload_arguments(p.add_argument_group("workload"))

    e = p.add_argument_group("engine")
    e.add_argument("--max-concurrency", type=_positive_int("--max-concurrency"), default=None,
                   help="CLOSED LOOP: at most N requests in flight; a due request waits for a "
                   "slot (recorded as slot_wait, and latency from t_intended includes it)")
    e.add_argument("--max-connections", type=int, default=0,
                   help="cap on simultaneous TCP connections (default 0: no cap)")
    e.add_argument("--max-send-lag-ms", type=_positive_float("--max-send-lag-ms"), default=5.0,
                   help="the run is INVALID if the generator's send lag p99 exceeds this (default 5)")
    e.add_argument("--no-chunk-times", dest="keep_chunk_times", action="store_false",
                   help="do not store each chunk's arrival time (smaller records, no ITL)")

    o = p.add_argument_group("output")
    o.add_argument("--result-dir", default="results", help="parent folder of run directories "
                   "(default ./results)")
    o.add_argument("--run-name", default=None, help="run directory name (default: time-model-rate)")
    o.add_argument("--result-filename", default=None, help="also write the summary JSON to "
                   "RESULT_DIR/RESULT_FILENAME (as vllm bench serve --save-result does)")
    o.add_argument("--save-result", action="store_true",
                   help="accepted for vllm bench serve compatibility; every run is saved")
    o.add_argument("--no-progress", dest="progress", action="store_false", help="no progress line")
    o.add_argument("--json", action="store_true", help="print the summary JSON instead of the table")


def client_config(ns: argparse.Namespace) -> ClientConfig:
    endpoint = ns.endpoint or BACKEND_ENDPOINTS.get(ns.backend or "", "/v1/completions")
    if endpoint not in ENDPOINTS:
        raise UsageError(f"--endpoint {endpoint!r} is not supported; use one of {', '.join(ENDPOINTS)}")
    base = ns.base_url or f"http://{ns.host}:{ns.port}"
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--base-url must start with http:// or https://, got {base!r}")
    base = base.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    return ClientConfig(
        base_url=base, model=ns.model, endpoint=endpoint, stream=ns.stream,
        include_usage=ns.include_usage, ignore_eos=ns.ignore_eos, api_key=ns.api_key,
        headers=dict(ns.header), timeout_s=ns.timeout, extra_body=ns.extra_body,
        served_model_name=ns.served_model_name,
    )


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


def cmd_plan(ns: argparse.Namespace) -> int:
    """Write the workload the flags describe to a plan file (JSONL), to replay with --plan."""
    from arrivals.plan import write_plan
    from loadgen.run import EXIT_ERROR

    try:
        wl = build_workload(ns)
        path = write_plan(wl, ns.output)
    except (OSError, ValueError) as e:
        if isinstance(e, UsageError):
            raise
        print(f"loadgen plan: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {len(wl)} requests over {wl.duration:.3f} s to {path}", file=sys.stderr)
    return 0


def cmd_run(ns: argparse.Namespace, argv: list[str]) -> int:
    import orjson

    from loadgen.engine import EngineOptions
    from loadgen.preflight import PreflightError
    from loadgen.run import EXIT_ERROR, RunSpec, execute

    cfg = client_config(ns)
    try:
        wl = build_workload(ns)
    except (OSError, ValueError) as e:  # TraceFormatError and PlanError are ValueErrors
        if isinstance(e, UsageError):
            raise
        print(f"loadgen run: {e}", file=sys.stderr)
        return EXIT_ERROR
    spec = RunSpec(
        client=cfg, workload=wl,
        engine=EngineOptions(max_concurrency=ns.max_concurrency, connection_limit=ns.max_connections),
        result_dir=Path(ns.result_dir), run_name=ns.run_name, max_send_lag_ms=ns.max_send_lag_ms,
        keep_chunk_times=ns.keep_chunk_times, do_preflight=not ns.skip_preflight,
        progress=ns.progress, argv=["loadgen", *argv],
    )
    if ns.max_concurrency:
        print(f"note: --max-concurrency {ns.max_concurrency} makes this a CLOSED-LOOP run: "
              "requests wait for a free slot; that wait is recorded as slot_wait", file=sys.stderr)
    try:
        res = execute(spec)
    except PreflightError as e:
        print(f"loadgen run: preflight failed: {e}", file=sys.stderr)
        return EXIT_ERROR
    except FileExistsError as e:
        print(f"loadgen run: run directory {e.filename} already exists; choose another --run-name",
              file=sys.stderr)
        return EXIT_ERROR
    if ns.result_filename:
        Path(ns.result_dir, ns.result_filename).write_bytes(
            orjson.dumps(res.summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print(orjson.dumps(res.summary, option=orjson.OPT_INDENT_2).decode() if ns.json else res.text)
    return res.exit_code


def cmd_summary(ns: argparse.Namespace) -> int:
    import orjson

    from loadgen.run import EXIT_ERROR, finish

    try:
        res = finish(Path(ns.run_dir))
    except (FileNotFoundError, ValueError) as e:
        print(f"loadgen summary: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(orjson.dumps(res.summary, option=orjson.OPT_INDENT_2).decode() if ns.json else res.text)
    return res.exit_code


def build_parser() -> argparse.ArgumentParser:
    from loadgen import __version__

    p = argparse.ArgumentParser(
        prog="loadgen",
        description="Open-loop load generator and end-to-end benchmark for LLM inference services.",
    )
    p.add_argument("--version", action="version", version=f"llm-loadgen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="drive an OpenAI-compatible server open-loop and record every request",
                       description="Send a seeded, open-loop schedule of requests to an "
                       "OpenAI-compatible endpoint; write a run directory and print a summary. "
                       "Exit code: 0 valid, 3 invalid (generator fell behind), 130/143 "
                       "interrupted (partial run saved), 1 error, 2 bad flags.")
    add_run_arguments(r)

    s = sub.add_parser("serve", help="start a model server (sim: the built-in reference server)")
    ssub = s.add_subparsers(dest="runtime", required=True, metavar="RUNTIME")
    sim = ssub.add_parser("sim", help="the simulated reference LLM server with a known cost model",
                          description="An OpenAI-compatible server that simulates continuous "
                          "batching with a documented cost model (servers/sim/model.py).")
    from servers.sim.cli import add_arguments as add_sim_arguments

    add_sim_arguments(sim)

    d = sub.add_parser("demo", help="start the reference server and run a short load at a few rates",
                       description="Start the built-in reference server on 127.0.0.1, run a short "
                       "open-loop load at a few request rates, write run directories and a report.")
    d.add_argument("--result-dir", default="results", help="parent folder (default ./results)")
    d.add_argument("--rates", default="4,12,24", help="comma-separated request rates (req/s)")
    d.add_argument("--num-prompts", type=_positive_int("--num-prompts"), default=None,
                   help="requests per rate (default: about 8 s of load per rate)")
    d.add_argument("--seed", type=int, default=0)

    pl = sub.add_parser("plan", help="write a workload (every request's time, prompt and "
                        "lengths) to a file, to replay with loadgen run --plan",
                        description="Build the workload that the same flags of loadgen run "
                        "would send and write it as a JSONL plan (docs/arrivals.md).")
    add_workload_arguments(pl.add_argument_group("workload"))
    pl.add_argument("--output", "-o", required=True, metavar="FILE", help="plan file to write")

    sm = sub.add_parser("summary", help="(re)summarise a run directory, complete or partial")
    sm.add_argument("run_dir", help="a run directory written by loadgen run")
    sm.add_argument("--json", action="store_true", help="print the summary JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        if ns.command == "run":
            return cmd_run(ns, argv)
        if ns.command == "summary":
            return cmd_summary(ns)
        if ns.command == "plan":
            return cmd_plan(ns)
        if ns.command == "serve":
            from servers.sim.cli import config_from_args
            from servers.sim.cli import main as sim_main

            try:
                config_from_args(ns)
            except ValueError as e:
                raise UsageError(str(e)) from None
            return sim_main(argv[2:]) or 0
        if ns.command == "demo":
            from loadgen.demo import demo

            return demo(ns)
    except UsageError as e:
        parser.exit(2, f"loadgen {ns.command}: error: {e}\n")
    except KeyboardInterrupt:
        return 130
    return 2
