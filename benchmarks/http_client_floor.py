"""What one streamed HTTP request costs the client, by HTTP client: the floor under loadgen's
per-request CPU (issue 9's "5x vLLM per core" asks for about 250 µs per 64-token request).

Closed loop, a fixed number of requests in flight, against the nginx null server
(../shared/tools/nullserver/start.sh: a static 64-event SSE body). Each client only does what
loadgen's client does during a stream (keep every network read and its time); no SSE parsing,
no records, no pacer. Measured: process CPU (``time.process_time``) per request, in the same
run for every client, interleaved, best of ``--repeat``.

Clients:
- ``aiohttp``: ``session.post`` + ``resp.content.iter_any()``, as loadgen/clients/openai.py;
- ``lean``: loadgen's own HTTP/1.1 client (loadgen/clients/h1.py, ``--http-client lean``):
  ``Pool.post`` as the OpenAI client calls it;
- ``protocol``: a bare ``asyncio.Protocol`` per connection, keep-alive, the request's bytes
  prepared before the loop, the response's end found from its headers (Content-Length, or the
  chunked encoding's last chunk). A floor, not a client: no redirects, proxies, TLS, timeouts.

    .venv/bin/python benchmarks/http_client_floor.py [--requests 20000] [--concurrency 8]

``protocol`` is not a product path: it is the floor under the other two (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
import uvloop

REPO = Path(__file__).resolve().parents[1]
NULLSERVER = REPO / ".." / "shared" / "tools" / "nullserver" / "start.sh"
BODY = orjson.dumps({"model": "mock-model", "prompt": "hello " * 16, "max_tokens": 64,
                     "stream": True, "stream_options": {"include_usage": True}})
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)
CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.I)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_aiohttp(url: str, n: int, conc: int) -> int:
    clock = time.perf_counter
    done = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        headers = {"Content-Type": "application/json"}

        async def one() -> None:
            nonlocal done
            while done < n:
                done += 1
                async with session.post(url, data=BODY, headers=headers) as resp:
                    pieces, times = [], []
                    async for piece in resp.content.iter_any():
                        times.append(clock())
                        pieces.append(piece)
                    assert resp.status == 200 and pieces

        await asyncio.gather(*(one() for _ in range(conc)))
    return done


async def run_lean(url: str, n: int, conc: int) -> int:
    from loadgen.clients.h1 import Pool

    done = 0
    pool = Pool(url, {"Content-Type": "application/json"})

    async def one() -> None:
        nonlocal done
        while done < n:
            done += 1
            r = await pool.post(BODY, 0.0, cap=1 << 28, error_cap=1 << 16, timeout_s=600)
            assert r.status == 200 and r.pieces

    try:
        await asyncio.gather(*(one() for _ in range(conc)))
    finally:
        pool.close()
    return done


class _Conn(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends prepared bytes and waits for the end."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.pieces: list[bytes] = []
        self.times: list[float] = []
        self.head: bytes | None = None
        self.remaining = -1  # body bytes still due (Content-Length), -1: unknown yet
        self.chunked = False
        self.buf = b""

    def connection_made(self, transport) -> None:  # noqa: ANN001
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.times.append(time.perf_counter())
        self.pieces.append(data)
        if self.head is None:
            self.buf += data
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            self.head = self.buf[:i + 2]
            rest = self.buf[i + 4:]
            self.buf = b""
            m = CONTENT_LENGTH.search(self.head)
            if m:
                self.remaining = int(m.group(1)) - len(rest)
            else:
                self.chunked = bool(CHUNKED.search(self.head))
                self.buf = rest
        elif self.chunked:
            self.buf += data
        else:
            self.remaining -= len(data)
        if self.chunked:
            # the chunked body ends with a zero-size chunk; a prototype checks the tail only
            if self.buf.endswith(b"\r\n0\r\n\r\n") or self.buf == b"0\r\n\r\n":
                self._finish()
            elif len(self.buf) > 64:
                self.buf = self.buf[-16:]
        elif self.remaining <= 0:
            self._finish()

    def _finish(self) -> None:
        w, self.waiter = self.waiter, None
        self.head, self.remaining, self.chunked, self.buf = None, -1, False, b""
        if w is not None and not w.done():
            w.set_result(None)

    def connection_lost(self, exc) -> None:  # noqa: ANN001
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"lost: {exc}"))

    async def request(self, raw: bytes) -> list[bytes]:
        self.pieces, self.times = [], []
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        await self.waiter
        return self.pieces


async def run_protocol(host: str, port: int, n: int, conc: int) -> int:
    loop = asyncio.get_running_loop()
    raw = (b"POST /v1/completions HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % (host.encode(), port, len(BODY))) + BODY
    done = 0

    async def one() -> None:
        nonlocal done
        _, conn = await loop.create_connection(_Conn, host, port)
        try:
            while done < n:
                done += 1
                pieces = await conn.request(raw)
                assert pieces and pieces[0].startswith(b"HTTP/1.1 200")
        finally:
            conn.transport.close()

    await asyncio.gather(*(one() for _ in range(conc)))
    return done


def measure(fn, *args) -> dict:  # noqa: ANN001
    c0, w0 = time.process_time(), time.perf_counter()
    n = uvloop.run(fn(*args))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"requests": n, "cpu_us_per_request": cpu / n * 1e6, "req_per_s": n / wall,
            "cores": cpu / wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--nullserver", type=Path, default=NULLSERVER)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    if not a.nullserver.exists():
        print(f"no null server at {a.nullserver} (needs Debian nginx-light)", file=sys.stderr)
        return 2
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="http_floor-"))
    out = subprocess.run(["bash", str(a.nullserver), str(port), str(work)], check=True,
                         capture_output=True, text=True).stdout.split()
    pid = int(out[-1])
    try:
        url = f"http://127.0.0.1:{port}/v1/completions"
        measure(run_aiohttp, url, 500, a.concurrency)  # warm both paths and nginx
        measure(run_protocol, "127.0.0.1", port, 500, a.concurrency)
        measure(run_lean, url, 500, a.concurrency)
        runs: dict[str, list[dict]] = {"aiohttp": [], "lean": [], "protocol": []}
        for _ in range(a.repeat):  # interleaved: a noisy minute hits both alike
            runs["aiohttp"].append(measure(run_aiohttp, url, a.requests, a.concurrency))
            runs["lean"].append(measure(run_lean, url, a.requests, a.concurrency))
            runs["protocol"].append(measure(run_protocol, "127.0.0.1", port, a.requests,
                                            a.concurrency))
    finally:
        os.kill(pid, signal.SIGTERM)  # nginx's master: it stops its worker and exits
        time.sleep(0.3)
        shutil.rmtree(work, ignore_errors=True)
    best = {k: min(r["cpu_us_per_request"] for r in v) for k, v in runs.items()}
    print(f"{a.requests} requests x {a.repeat}, {a.concurrency} in flight, 64-event SSE body; "
          "client CPU per request (best of the repeats; all below):")
    for k, v in runs.items():
        print(f"  {k:<9} {best[k]:7.1f} µs   " + "  ".join(
            f"{r['cpu_us_per_request']:.1f} µs @ {r['req_per_s']:.0f}/s" for r in v))
    print(f"  ratio aiohttp / protocol: {best['aiohttp'] / best['protocol']:.2f}, "
          f"aiohttp / lean: {best['aiohttp'] / best['lean']:.2f}")
    if a.out:
        a.out.write_text(json.dumps({"config": vars(a) | {"nullserver": str(a.nullserver),
                                                           "out": str(a.out)},
                                     "runs": runs, "best_us": best}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
