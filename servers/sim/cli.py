"""Command line of the sim server: ``python -m servers.sim`` (and ``loadgen serve sim``)."""

from __future__ import annotations

import argparse
import sys

from servers.sim.config import FAULT_KINDS, SimConfig
from servers.sim.model import SimCosts

_DEFAULTS = SimConfig()
_COSTS = SimCosts()

DESCRIPTION = """\
Simulated OpenAI-compatible LLM server with a deterministic performance model.
A continuous-batching engine runs iterations back to back; in each, every running sequence
emits one token, and newly admitted requests are prefilled (their first token comes at its
end). One iteration takes
    step = step_base + step_per_seq * B + prefill_per_token * P
with B the sequences running and P the prompt tokens admitted in it. Alone on an idle server,
a request of I prompt words and O output tokens sees
    TTFT = step_base + step_per_seq + prefill_per_token * I,
    ITL  = step_base + step_per_seq,   E2E = TTFT + (O - 1) * ITL.
Tokens are whitespace-separated words (prompt and output alike)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sim server's flags to ``parser`` (the loadgen CLI reuses this)."""
    net = parser.add_argument_group("server")
    net.add_argument("--host", default=_DEFAULTS.host,
                     help="address to listen on (default %(default)s)")
    net.add_argument("--port", type=int, default=_DEFAULTS.port,
                     help="TCP port; 0 picks a free one, printed at start (default %(default)s)")
    net.add_argument("--model", default=_DEFAULTS.model,
                     help="served model name; requests naming another get HTTP 404 "
                          "(default %(default)s)")
    engine = parser.add_argument_group("performance model")
    engine.add_argument("--max-batch-size", type=int, default=_DEFAULTS.max_batch,
                        help="most sequences running at once; later requests wait in a FIFO "
                             "queue (default %(default)s)")
    engine.add_argument("--step-base-ms", type=float, default=_COSTS.step_base * 1e3,
                        help="fixed cost of one engine iteration, ms (default %(default)s)")
    engine.add_argument("--step-per-seq-ms", type=float, default=_COSTS.step_per_seq * 1e3,
                        help="added to an iteration per running sequence, ms "
                             "(default %(default)s)")
    engine.add_argument("--prefill-per-token-ms", type=float,
                        default=_COSTS.prefill_per_token * 1e3,
                        help="added to an iteration per prompt token prefilled in it, ms "
                             "(default %(default)s)")
    engine.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                        help="seeds output text, early stops and fault choices; the same seed "
                             "and arrival order give the same responses (default %(default)s)")
    engine.add_argument("--eos-prob", type=float, default=_DEFAULTS.eos_prob,
                        help="probability of stopping after each token (finish_reason 'stop') "
                             "unless ignore_eos or fewer than min_tokens; 0 = always "
                             "max_tokens (default %(default)s)")
    engine.add_argument("--stream-interval", type=int, default=_DEFAULTS.stream_interval,
                        help="tokens per streamed chunk after the first (like vLLM's "
                             "--stream-interval); >1 makes chunks carry several tokens "
                             "(default %(default)s)")
    faults = parser.add_argument_group("fault injection (off by default)")
    faults.add_argument("--fault-rate", type=float, default=_DEFAULTS.fault_rate,
                        help="fraction of requests, chosen from the seed, that get "
                             "--fault-kind (default %(default)s)")
    faults.add_argument("--fault-kind", choices=FAULT_KINDS, default=_DEFAULTS.fault_kind,
                        help="http500: HTTP 500; http429: HTTP 429 with Retry-After: 1; "
                             "http503: HTTP 503 with Retry-After: 2; "
                             "malformed: a few tokens then a non-JSON data line; reset: a few "
                             "tokens then a TCP reset; stall: a few tokens then silence for "
                             "--fault-stall-s; utf8: a chunk whose bytes are not UTF-8; giant: "
                             "one chunk of --fault-giant-bytes; endless: a stream that never "
                             "ends (servers/sim/faults.py) (default %(default)s)")
    faults.add_argument("--fault-stall-s", type=float, default=_DEFAULTS.fault_stall_s,
                        help="length of a stall fault, seconds (default %(default)s)")
    faults.add_argument("--fault-giant-bytes", type=int, default=_DEFAULTS.fault_giant_bytes,
                        help="size of the chunk of a giant fault, bytes (default %(default)s)")


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``loadgen serve sim`` only: with --info-json or --profile the server runs as a
    child (``python -m servers.sim``) through the common lifecycle (servers/launch.py)."""
    from servers.profile_flags import add_profile_arguments

    g = parser.add_argument_group("launched as a child (with --info-json or --profile)")
    g.add_argument("--info-json", default=None, metavar="FILE",
                   help="start the server as a child process and write its info (runtime, "
                   "version, argv, profile) to FILE, for `loadgen run --server-info FILE`")
    g.add_argument("--log-dir", default="results/servers",
                   help="the child's log folder (default %(default)s)")
    add_profile_arguments(g)


_OWN_FLAGS = ("host", "port", "model", "max_batch_size")  # written by SimRuntime.command


def flag_argv(ns: argparse.Namespace) -> list[str]:
    """Every performance-model and fault flag of ``ns`` (defaults too, so the manifest's argv
    says each value) as ``python -m servers.sim`` arguments."""
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    out: list[str] = []
    for a in p._actions:
        if a.option_strings and a.dest not in _OWN_FLAGS:
            out += [a.option_strings[0], str(getattr(ns, a.dest))]
    return out


def launch_settings(ns: argparse.Namespace):
    """(SimRuntime, ServeSettings) that start the server the flags describe as a child."""
    from pathlib import Path

    from servers.launch import ServeSettings
    from servers.profile_flags import profile_settings
    from servers.sim.runtime import SimRuntime

    settings = ServeSettings(model=ns.model, max_batch_size=ns.max_batch_size, host=ns.host,
                             port=ns.port, extra_args=tuple(flag_argv(ns)),
                             log_dir=Path(ns.log_dir), startup_timeout_s=60.0,
                             **profile_settings(ns))
    return SimRuntime(), settings


def config_from_args(ns: argparse.Namespace) -> SimConfig:
    """The SimConfig described by parsed flags; ValueError names a bad flag's field."""
    costs = SimCosts(
        step_base=ns.step_base_ms / 1e3,
        step_per_seq=ns.step_per_seq_ms / 1e3,
        prefill_per_token=ns.prefill_per_token_ms / 1e3,
    )
    return SimConfig(
        host=ns.host,
        port=ns.port,
        model=ns.model,
        max_batch=ns.max_batch_size,
        costs=costs,
        seed=ns.seed,
        eos_prob=ns.eos_prob,
        fault_rate=ns.fault_rate,
        fault_kind=ns.fault_kind,
        fault_stall_s=ns.fault_stall_s,
        fault_giant_bytes=ns.fault_giant_bytes,
        stream_interval=ns.stream_interval,
    )


def run(config: SimConfig) -> int:
    """Serve ``config`` on uvloop until SIGINT/SIGTERM; print the listening line; return 0."""
    import uvloop

    from servers.sim.app import RunningServer, serve

    def ready(server: RunningServer) -> None:
        print(f"sim server listening on {server.url} (model {config.model})", flush=True)

    uvloop.run(serve(config, on_ready=ready))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m servers.sim [flags]``: parse flags, run the server, exit 0 on a signal."""
    parser = argparse.ArgumentParser(
        prog="python -m servers.sim", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        config = config_from_args(ns)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return run(config)
    except OSError as exc:  # e.g. the port is taken
        print(f"sim server: cannot listen on {config.host}:{config.port}: {exc}",
              file=sys.stderr)
        return 1
