"""``loadgen proxy`` / ``python -m servers.faultproxy``: run the fault proxy until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from urllib.parse import urlsplit

from servers.faultproxy.policy import FAULT_KINDS, ProxyPolicy


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upstream", required=True, metavar="URL",
                   help="the server to forward to, e.g. http://127.0.0.1:8000")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one "
                   "(printed at start)")
    f = p.add_argument_group("faults (one kind, on a seeded fraction of requests)")
    f.add_argument("--fault", choices=FAULT_KINDS, default="none",
                   help="delay_headers: hold the response --delay-s; stall: --delay-s of silence "
                   "after --after-events SSE events; reset: TCP RST there; truncate: a clean "
                   "close there, mid-chunk (default none)")
    f.add_argument("--fault-rate", type=float, default=1.0, help="fraction of requests (default 1)")
    f.add_argument("--after-events", type=int, default=2,
                   help="SSE events forwarded before a mid-stream fault (default 2)")
    f.add_argument("--delay-s", type=float, default=1.0,
                   help="delay of delay_headers, length of stall (default 1)")
    n = p.add_argument_group("network impairment (every read)")
    n.add_argument("--latency-ms", type=float, default=0.0, help="one-way added delay, both ways")
    n.add_argument("--jitter-ms", type=float, default=0.0, help="standard deviation of the delay")
    n.add_argument("--stall-prob", type=float, default=0.0,
                   help="probability that a read from the server is held --stall-ms more")
    n.add_argument("--stall-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0, help="seeds the fault choice and the delays")
    p.add_argument("--tls-cert", default=None, metavar="PEM",
                   help="serve HTTPS with this certificate (and --tls-key) in front of a plain "
                   "HTTP upstream, e.g. to test a client against a self-signed endpoint")
    p.add_argument("--tls-key", default=None, metavar="PEM")


def policy_from_args(ns: argparse.Namespace) -> ProxyPolicy:
    return ProxyPolicy(fault=ns.fault, rate=ns.fault_rate, after_events=ns.after_events,
                       delay_s=ns.delay_s, latency_s=ns.latency_ms / 1e3,
                       jitter_s=ns.jitter_ms / 1e3, stall_prob=ns.stall_prob,
                       stall_s=ns.stall_ms / 1e3, seed=ns.seed)


def _upstream(url: str) -> tuple[str, int]:
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"--upstream must be http://HOST:PORT, got {url!r}")
    return u.hostname, u.port or 80


async def _serve(ns: argparse.Namespace, policy: ProxyPolicy) -> None:
    from servers.faultproxy.proxy import FaultProxy

    host, port = _upstream(ns.upstream)
    tls = None
    if ns.tls_cert:
        import ssl

        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(ns.tls_cert, ns.tls_key)
    proxy = await FaultProxy(host, port, policy, ns.host, ns.port, tls=tls).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # "listening on URL": the line servers/process.py waits for
    print(f"fault proxy listening on {proxy.url} -> {ns.upstream} ({policy.as_dict()})", flush=True)
    try:
        await stop.wait()
    finally:
        await proxy.close()
        print(f"fault proxy stats: {dict(proxy.stats)}", flush=True)


def run(ns: argparse.Namespace) -> int:
    try:
        policy = policy_from_args(ns)
        _upstream(ns.upstream)
    except ValueError as e:
        print(f"loadgen proxy: error: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(ns, policy))
    except OSError as e:
        print(f"loadgen proxy: cannot listen on {ns.host}:{ns.port}: {e}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proxy", help="a TCP proxy that injects faults and network impairment",
                       description="Forward to --upstream, injecting one kind of fault on a "
                       "seeded fraction of requests and/or latency, jitter and stalls on every "
                       "read (docs/reliability.md).")
    add_arguments(p)
    p.set_defaults(handler=run)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m servers.faultproxy", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))
