"""Sub-commands ``loadgen env [--json]``, ``loadgen env diff A B``, ``loadgen probe memcpy``,
``loadgen telemetry join RUN_DIR``, ``loadgen telemetry recover RUN_DIR``, and the telemetry
flags of ``loadgen run``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from loadgen.telemetry.session import TelemetryOptions


def _positive(name: str):
    def f(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {s!r}")
        return v
    return f


def add_telemetry_arguments(engine: Any, output: Any) -> None:
    """The telemetry flags of ``loadgen run`` (engine and output groups of cli.py)."""
    engine.add_argument("--no-telemetry", dest="telemetry", action="store_false",
                        help="do not sample host/process/GPU resources during the run "
                        "(telemetry.parquet; on by default)")
    engine.add_argument("--telemetry-interval", type=_positive("--telemetry-interval"),
                        default=1.0, metavar="S", help="resource sampling interval (default 1 s)")
    engine.add_argument("--server-pid", type=int, default=None, metavar="PID",
                        help="also sample this server process and its children")
    engine.add_argument("--scrape-metrics", nargs="?", const="", default=None, metavar="URL",
                        help="scrape the server's Prometheus metrics during the run into "
                        "server_metrics.parquet (default URL: BASE_URL/metrics)")
    engine.add_argument("--scrape-interval", type=_positive("--scrape-interval"), default=1.0,
                        metavar="S", help="seconds between scrapes (default 1)")
    output.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve the generator's live Prometheus metrics on this port "
                        "(0: any free port)")
    output.add_argument("--metrics-host", default="127.0.0.1",
                        help="address for --metrics-port (default 127.0.0.1)")


def options_from_argv(argv: list[str], base_url: str) -> TelemetryOptions:
    """TelemetryOptions from a ``loadgen run`` command line (the other flags are ignored)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group()
    add_telemetry_arguments(g, g)
    ns, _ = p.parse_known_args(argv)
    url = ns.scrape_metrics
    if url == "":
        url = base_url.rstrip("/") + "/metrics"
    return TelemetryOptions(sample=ns.telemetry, sample_interval_s=ns.telemetry_interval,
                            server_pid=ns.server_pid, scrape_url=url,
                            scrape_interval_s=ns.scrape_interval, metrics_port=ns.metrics_port,
                            metrics_host=ns.metrics_host)


def _dump(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()


def cmd_env(ns: argparse.Namespace) -> int:
    from loadgen.telemetry import envdiff
    from loadgen.telemetry.env import environment

    if ns.env_command == "diff":
        try:
            a, b = envdiff.load_env(ns.a), envdiff.load_env(ns.b)
        except (OSError, ValueError) as e:
            print(f"loadgen env diff: {e}", file=sys.stderr)
            return 1
        rows = envdiff.diff(a, b)
        print(_dump(envdiff.rows_json(rows)) if ns.json else envdiff.render(rows, ns.a, ns.b))
        return 0
    env = environment()
    if ns.json:
        print(_dump(env))
    else:
        print(_text(env))
    return 0


def _text(env: dict[str, Any]) -> str:
    from loadgen.telemetry.envdiff import flatten

    lines = []
    for k, v in flatten(env).items():
        if k == "cpu.flags":
            v = f"{len(v)} flags" if isinstance(v, list) else v
        s = v if isinstance(v, str) else orjson.dumps(v).decode()
        lines.append(f"{k:45s} {s[:200]}")
    return "\n".join(lines)


def cmd_probe_memcpy(ns: argparse.Namespace) -> int:
    from loadgen.telemetry.probe_memcpy import run_probe

    sizes = [int(float(s) * (1 << 20)) for s in ns.sizes_mb.split(",")]
    out = run_probe(Path(ns.result_dir), ns.run_name, sizes, ns.repeats,
                    device=not ns.no_device)
    print(out["text"])
    print(f"wrote {out['run_dir']}", file=sys.stderr)
    return 0


def cmd_join(ns: argparse.Namespace) -> int:
    from loadgen.telemetry.join import join_requests

    try:
        table, info = join_requests(ns.run_dir)
    except FileNotFoundError as e:
        print(f"loadgen telemetry join: {e}", file=sys.stderr)
        return 1
    print(f"wrote {Path(ns.run_dir) / 'requests_joined.parquet'}: {table.num_rows} requests, "
          f"{info['scrapes']} scrapes, series from {info['metric_names']}")
    return 0


def cmd_recover(ns: argparse.Namespace) -> int:
    from loadgen.telemetry.recover import recover_telemetry

    try:
        info = recover_telemetry(ns.run_dir)
    except FileNotFoundError as e:
        print(f"loadgen telemetry recover: {e}", file=sys.stderr)
        return 1
    for name, f in info["files"].items():
        print(f"wrote {Path(ns.run_dir) / name}: {f['rows']} rows from {f['samples']} samples "
              f"({f['dropped_lines']} cut-short lines dropped); t from {f['t_origin']}")
    return 0


def register(sub: Any) -> None:
    e = sub.add_parser("env", help="print this machine's environment manifest; env diff A B",
                       description="The environment manifest recorded in every run "
                       "(docs/telemetry.md); `loadgen env diff A B` compares two runs or files.")
    e.add_argument("--json", action="store_true", help="JSON (as in manifest.environment)")
    esub = e.add_subparsers(dest="env_command", metavar="diff")
    d = esub.add_parser("diff", help="show what differs between two environments")
    d.add_argument("a", help="run directory or env JSON file")
    d.add_argument("b", help="run directory or env JSON file")
    d.add_argument("--json", action="store_true", help="differences as JSON")
    e.set_defaults(handler=cmd_env)

    p = sub.add_parser("probe", help="measurements of the machine itself (probe memcpy)")
    psub = p.add_subparsers(dest="probe", required=True, metavar="PROBE")
    m = psub.add_parser("memcpy", help="host<->device copy bandwidth by page size",
                        description="Copy bandwidth for host buffers on 4 KB pages, THP (2 MB, "
                        "madvise), hugetlbfs 2 MB and 1 GB pages, pageable and pinned; "
                        "host<->GPU with torch on CUDA, host-only copies without a GPU.")
    m.add_argument("--sizes-mb", default="1,16,64,256", help="buffer sizes in MiB "
                   "(comma-separated, default 1,16,64,256)")
    m.add_argument("--repeats", type=int, default=5, help="copies per size (default 5)")
    m.add_argument("--result-dir", default="results", help="parent folder (default ./results)")
    m.add_argument("--run-name", default=None, help="directory name (default probe-memcpy-TIME)")
    m.add_argument("--no-device", action="store_true", help="host copies only, even with a GPU")
    m.set_defaults(handler=cmd_probe_memcpy)

    t = sub.add_parser("telemetry", help="post-process a run's telemetry (join, recover)")
    tsub = t.add_subparsers(dest="telemetry_command", required=True, metavar="ACTION")
    j = tsub.add_parser("join", help="per-request server queue/batch/KV at send time "
                        "-> requests_joined.parquet")
    j.add_argument("run_dir")
    j.set_defaults(handler=cmd_join)
    r = tsub.add_parser("recover", help="write telemetry.parquet/server_metrics.parquet from "
                        "the spool files of a run whose generator and telemetry process died")
    r.add_argument("run_dir")
    r.set_defaults(handler=cmd_recover)
