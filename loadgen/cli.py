"""The command line: ``loadgen run | plan | serve | demo | summary`` and plug-in commands.

Flags of ``loadgen run`` follow ``vllm bench serve`` where a user would expect them, so its
command lines keep working (README has the table).

Other folders add their own sub-commands without editing this file's logic: a module listed in
``COMMAND_MODULES`` has ``register(subparsers)``, which adds its parsers and sets
``handler=function(ns) -> exit code`` on each; a module listed in ``SERVE_MODULES`` does the
same under ``loadgen serve``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from loadgen.clients.openai import (
    BACKEND_ENDPOINTS,
    DEFAULT_MAX_RESPONSE_BYTES,
    ENDPOINTS,
    ClientConfig,
)
from loadgen.flags import (
    UsageError,
    _header,
    _json_obj,
    _non_negative_int,
    _port,
    _positive_float,
    _positive_int,
    _workers,
)
from loadgen.workload_flags import add_workload_arguments, build_workload

# Modules that add sub-commands (see the module docstring). One line each.
COMMAND_MODULES: tuple[str, ...] = ("analysis.report_commands", "analysis.commands",
                                    "loadgen.telemetry.commands",
                                    "loadgen.telemetry.profile_commands",
                                    "arrivals.commands",
                                    "servers.models.commands",
                                    "servers.faultproxy.cli",
                                    "loadgen.matrix.commands",
                                    "analysis.catalog_commands")
# Modules that add runtimes under `loadgen serve` (servers issue). One line each.
SERVE_MODULES: tuple[str, ...] = ("servers.llamacpp.cli", "servers.pytorch.cli", "servers.vllm.cli",
                                  "servers.triton.cli")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("endpoint")
    g.add_argument("--base-url", help="server URL without /v1, e.g. http://127.0.0.1:8000 "
                   "(default: http://HOST:PORT from --host/--port)")
    g.add_argument("--host", default="127.0.0.1", help="server host when --base-url is not given")
    g.add_argument("--port", type=_port, default=8000, help="server port when --base-url is not given")
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
    g.add_argument("--continuous-usage-stats", dest="continuous_usage", action="store_true",
                   help="send stream_options.continuous_usage_stats (vLLM, the sim): usage in "
                   "every chunk, so chunks carrying several tokens are counted exactly "
                   "(records' chunk_tokens); llama-server: --extra-body "
                   "'{\"timings_per_token\": true}' does the same")
    g.add_argument("--ignore-eos", action="store_true", help="force exactly the requested output "
                   "length: sends ignore_eos=true and min_tokens=max_tokens (vLLM, and others)")
    g.add_argument("--extra-body", type=_json_obj, default={}, metavar="JSON",
                   help="JSON object merged into every request body, e.g. '{\"temperature\": 0}'")
    g.add_argument("--timeout", "--request-timeout", dest="timeout", type=_positive_float("--timeout"),
                   default=600.0, help="per-request timeout in seconds (default 600); "
                   "requests that exceed it are recorded as 'timeout'")
    g.add_argument("--max-response-bytes", type=_positive_int("--max-response-bytes"),
                   default=DEFAULT_MAX_RESPONSE_BYTES, metavar="N",
                   help="cut off a response body larger than N bytes and record it as "
                   "invalid_response (default 256 MiB), so a runaway stream cannot exhaust memory")
    g.add_argument("--insecure", "--no-verify-tls", dest="verify_tls", action="store_false",
                   help="do not verify the HTTPS server's certificate (self-signed test servers "
                   "only; by default certificates are verified)")
    g.add_argument("--http-client", choices=("lean", "aiohttp"), default="lean",
                   help="the OpenAI client's HTTP client (default lean: loadgen's own HTTP/1.1 "
                   "client on asyncio protocols and httptools, about 6x less CPU per request "
                   "than aiohttp for the HTTP part; it follows no redirects). aiohttp: the "
                   "default before 2026-12-03, follows redirects (docs/clients.md)")
    g.add_argument("--count-tokens-with-server", action="store_true",
                   help="before t0, count every distinct prompt with the server's POST "
                   "/tokenize (vLLM, llama-server, the sim) into the records' "
                   "input_tokens_tokenize; the summary flags counts that disagree")
    g.add_argument("--skip-preflight", action="store_true",
                   help="do not check /v1/models and send a test request before the run")
    from loadgen.clients.select import add_client_arguments

    add_client_arguments(g)  # --client openai|triton-grpc|triton-http|kserve|http

    add_workload_arguments(p.add_argument_group("workload"))

    e = p.add_argument_group("engine")
    e.add_argument("--max-concurrency", type=_positive_int("--max-concurrency"), default=None,
                   help="CLOSED LOOP: at most N requests in flight; a due request waits for a "
                   "slot (recorded as slot_wait, and latency from t_intended includes it)")
    e.add_argument("--max-connections", type=_non_negative_int("--max-connections"), default=0,
                   help="cap on simultaneous TCP connections (default 0: no cap)")
    e.add_argument("--no-keepalive", dest="keepalive", action="store_false",
                   help="a new TCP connection for every request (closed after its response); "
                   "for servers that close streamed connections without saying so, such as "
                   "llama-server (docs/servers.md)")
    e.add_argument("--max-send-lag-ms", type=_positive_float("--max-send-lag-ms"), default=5.0,
                   help="the run is INVALID if the generator's send lag p99 exceeds this (default 5)")
    e.add_argument("--no-chunk-times", dest="keep_chunk_times", action="store_false",
                   help="do not store each chunk's arrival time (smaller records, no ITL)")
    e.add_argument("--workers", type=_workers, default="auto", metavar="N|auto",
                   help="generator processes sharing the one schedule (split round-robin by "
                   "request index, sessions kept whole; one t0). Default auto: 1 unless the "
                   "busiest second of the schedule exceeds 1200 req/s (400 with "
                   "--http-client aiohttp or --client other than openai), then one per "
                   "1200 (400) req/s, at most one per core (README, docs/benchmarks.md)")
    e.add_argument("--ray", default=None, metavar="ADDRESS|auto|local",
                   help="run the workers on a Ray cluster (pip install 'llm-loadgen[ray]'): "
                   "auto = the running cluster, ADDRESS = ray://HOST:10001 or HOST:6379, "
                   "local = start one on this machine; records come back to this run directory")

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

    from loadgen.telemetry.commands import add_telemetry_arguments

    add_telemetry_arguments(e, o)  # read by loadgen.run from the command line (docs/telemetry.md)


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
        served_model_name=ns.served_model_name, max_response_bytes=ns.max_response_bytes,
        verify_tls=ns.verify_tls, continuous_usage=getattr(ns, "continuous_usage", False),
        http_client=getattr(ns, "http_client", "lean"),
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
    sess = f" ({wl.sessions.n_sessions} sessions, starts)" if wl.sessions is not None else ""
    print(f"wrote {len(wl)} requests over {wl.duration:.3f} s{sess} to {path}", file=sys.stderr)
    return 0


def cmd_run(ns: argparse.Namespace, argv: list[str]) -> int:
    import orjson

    from loadgen.clients.select import make_client
    from loadgen.engine import EngineOptions
    from loadgen.preflight import PreflightError
    from loadgen.result_dir import ResultDirError
    from loadgen.run import EXIT_ERROR, RunSpec, RunWriteError, execute
    from loadgen.telemetry.server_launch import after_run, apply_server_info
    from loadgen.workers import WorkerError

    launched = apply_server_info(ns, argv)  # --server-info FILE: manifest's server_launch
    cfg = make_client(ns, client_config)  # the OpenAI ClientConfig unless --client says
    try:
        wl = build_workload(ns)
    except (OSError, ValueError) as e:  # TraceFormatError and PlanError are ValueErrors
        if isinstance(e, UsageError):
            raise
        print(f"loadgen run: {e}", file=sys.stderr)
        return EXIT_ERROR
    workers = ns.workers
    if workers == "auto":
        from loadgen.workers import auto_workers, rate_per_worker

        workers = auto_workers(wl, max_concurrency=ns.max_concurrency,
                               rate_per_worker=rate_per_worker(cfg))
        if ns.ray is not None:
            from loadgen.distributed.ray_runner import AUTO

            workers = AUTO if workers == 1 else workers
    elif ns.max_concurrency and ns.max_concurrency < workers:
        raise UsageError(f"--max-concurrency {ns.max_concurrency} is smaller than --workers "
                         f"{workers}: each worker needs at least one slot")
    spec = RunSpec(
        client=cfg, workload=wl, workers=workers, ray=ns.ray,
        engine=EngineOptions(max_concurrency=ns.max_concurrency, connection_limit=ns.max_connections,
                             keepalive=ns.keepalive),
        result_dir=Path(ns.result_dir), run_name=ns.run_name, max_send_lag_ms=ns.max_send_lag_ms,
        keep_chunk_times=ns.keep_chunk_times, do_preflight=not ns.skip_preflight,
        progress=ns.progress, argv=["loadgen", *argv],
        count_tokens_with_server=ns.count_tokens_with_server,
        extra_manifest=launched or {},
    )
    if not ns.verify_tls and cfg.base_url.startswith("https://"):
        print("warning: --insecure: the server's TLS certificate is not verified", file=sys.stderr)
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
    except (ResultDirError, RunWriteError, WorkerError) as e:
        print(f"loadgen run: {e}", file=sys.stderr)
        return EXIT_ERROR
    after_run(res.run_dir, launched)  # the server's profile, if it has stopped by now
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
    from loadgen.telemetry.server_launch import add_server_info_argument

    add_server_info_argument(r.add_argument_group("launched server"))

    s = sub.add_parser("serve", help="start a model server (sim: the built-in reference server)")
    ssub = s.add_subparsers(dest="runtime", required=True, metavar="RUNTIME")
    sim = ssub.add_parser("sim", help="the simulated reference LLM server with a known cost model",
                          description="An OpenAI-compatible server that simulates continuous "
                          "batching with a documented cost model (servers/sim/model.py).")
    from servers.sim.cli import add_arguments as add_sim_arguments
    from servers.sim.cli import add_launch_arguments as add_sim_launch_arguments

    add_sim_arguments(sim)
    add_sim_launch_arguments(sim)  # --info-json, --log-dir, --profile, --profile-dir
    from servers.serve_cli import add_uniform_arguments

    add_uniform_arguments(sim, positional_model=False, no_tensor_parallel="the simulator's "
                          "cost model is one device")
    sim.set_defaults(handler=cmd_serve_sim)
    for mod in SERVE_MODULES:
        importlib.import_module(mod).register(ssub)

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
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return p


def cmd_serve_sim(ns: argparse.Namespace) -> int:
    from servers.sim.cli import config_from_args, run

    try:
        cfg = config_from_args(ns)
    except ValueError as e:
        raise UsageError(str(e)) from None
    from servers.profile_flags import launched

    if launched(ns):  # --info-json or --profile: a child process, as the other runtimes
        from servers.serve_cli import serve
        from servers.sim.cli import launch_settings

        return serve(*launch_settings(ns), ns.info_json)
    return run(cfg) or 0


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``loadgen serve RUNTIME ... -- ARGS``: ARGS are for the server, verbatim (argparse
    cannot take them after a positional MODEL itself). None when there is no ``--``."""
    if argv[:1] != ["serve"] or "--" not in argv:
        return argv, None
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def parse_args(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace, list[str]]:
    """Parse a command line as ``main`` does: (parser, namespace, argv without `-- ARGS`).
    Bad flags exit 2 (argparse) with the message."""
    parser = build_parser()
    argv, passthrough = split_passthrough(argv)
    from servers.serve_cli import OWN_FLAG_RUNTIMES, normalise_uniform

    if passthrough is not None and argv[1:2] and argv[1] in OWN_FLAG_RUNTIMES:
        argv, passthrough = [*argv, *passthrough], None  # our own servers: their own flags
    ns = parser.parse_args(argv)
    if passthrough is not None:
        if not hasattr(ns, "passthrough"):
            parser.exit(2, f"loadgen {' '.join(argv[:2])}: error: this runtime takes no "
                        "arguments after `--`\n")
        ns.passthrough = passthrough
    if ns.command == "serve":
        try:
            normalise_uniform(ns, ns.runtime)
        except UsageError as e:
            parser.exit(2, f"loadgen serve {ns.runtime}: error: {e}\n")
    return parser, ns, argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, ns, argv = parse_args(argv)
    try:
        if ns.command == "run":
            return cmd_run(ns, argv)
        if ns.command == "summary":
            return cmd_summary(ns)
        if ns.command == "plan":
            return cmd_plan(ns)
        if getattr(ns, "handler", None) is not None:
            return ns.handler(ns)
        if ns.command == "demo":
            from loadgen.demo import demo

            return demo(ns)
    except UsageError as e:
        parser.exit(2, f"loadgen {ns.command}: error: {e}\n")
    except KeyboardInterrupt:
        return 130
    return 2
