"""The fault-injecting TCP proxy: asyncio, between the generator and any HTTP server.

Each accepted connection gets its own connection to the upstream server and two pumps, one
per direction. Requests are told apart without parsing HTTP: the generator (aiohttp) never
pipelines, so data from the client after response bytes have flowed starts a new request,
and that request draws its fault (policy.py). Delays are applied per read by a delivery task
per direction, in order (policy.py's impairment model). Counters of what was done are kept
in ``FaultProxy.stats`` (and served by the CLI's log line at exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from servers.faultproxy.policy import TRUNCATE_EXTRA, Draws, ProxyPolicy, TriggerScanner

READ_BYTES = 1 << 16
_CLOSE = object()  # end of a direction's queue


def _rst(writer: asyncio.StreamWriter) -> None:
    """Abort a connection with an RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None and not isinstance(sock, ssl.SSLSocket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class _Conn:
    fault: str | None = None
    scanner: TriggerScanner | None = None
    response_started: bool = False
    requests: int = 0
    broken: bool = False
    tasks: list[asyncio.Task] = field(default_factory=list)


class FaultProxy:
    """Listen on ``host:port`` (0: a free port) and forward to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int, policy: ProxyPolicy,
                 host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.tls = tls  # serve HTTPS (TLS terminated here) in front of a plain-HTTP upstream
        self.policy = policy
        self.host, self.port = host, port
        self.draws = Draws(policy)
        self.stats: Counter[str] = Counter()
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  backlog=1024, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self.stats["connections"] += 1
        try:
            try:
                ur, uw = await asyncio.open_connection(*self.upstream)
            except OSError:
                self.stats["upstream_connect_failed"] += 1
                _rst(cw)  # the client sees what it would see without the proxy: a refusal
                return
            await self._relay(cr, cw, ur, uw)
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            for w in (cw,):
                with contextlib.suppress(Exception):
                    w.close()

    async def _relay(self, cr, cw, ur, uw) -> None:
        conn = _Conn()
        up_q: asyncio.Queue = asyncio.Queue()
        down_q: asyncio.Queue = asyncio.Queue()
        t = [
            asyncio.create_task(self._pump_requests(cr, up_q, conn)),
            asyncio.create_task(self._deliver(up_q, uw, conn)),
            asyncio.create_task(self._pump_responses(ur, down_q, conn)),
            asyncio.create_task(self._deliver_responses(down_q, cw, uw, conn)),
        ]
        conn.tasks = t
        try:
            await asyncio.wait(t, return_when=asyncio.ALL_COMPLETED)
        finally:
            for task in t:
                task.cancel()
            await asyncio.gather(*t, return_exceptions=True)
            with contextlib.suppress(Exception):
                uw.close()

    async def _pump_requests(self, cr: asyncio.StreamReader, q: asyncio.Queue, conn: _Conn) -> None:
        """Client -> upstream: reads, each due after its added delay; new requests draw faults."""
        try:
            while True:
                data = await cr.read(READ_BYTES)
                if not data:
                    break
                if conn.requests == 0 or conn.response_started:
                    conn.requests += 1
                    conn.response_started = False
                    conn.fault = self.draws.fault_for_next_request()
                    conn.scanner = TriggerScanner(
                        0 if conn.fault == "delay_headers" else self.policy.after_events)
                    self.stats["requests"] += 1
                    if conn.fault:
                        self.stats[f"fault_{conn.fault}_drawn"] += 1
                q.put_nowait((time.perf_counter() + self.draws.delay(False), data))
        except (ConnectionError, OSError):
            pass
        finally:
            q.put_nowait((0.0, _CLOSE))

    async def _pump_responses(self, ur: asyncio.StreamReader, q: asyncio.Queue, conn: _Conn) -> None:
        """Upstream -> client: reads, each due after its added delay (and stall)."""
        try:
            while True:
                data = await ur.read(READ_BYTES)
                if not data:
                    break
                conn.response_started = True
                q.put_nowait((time.perf_counter() + self.draws.delay(True), data, conn.fault,
                              conn.scanner))
        except (ConnectionError, OSError):
            pass
        finally:
            q.put_nowait((0.0, _CLOSE, None, None))

    async def _deliver(self, q: asyncio.Queue, w: asyncio.StreamWriter, conn: _Conn) -> None:
        try:
            while True:
                due, data = await q.get()
                if data is _CLOSE:
                    with contextlib.suppress(OSError, RuntimeError):
                        w.write_eof()
                    return
                await _sleep_until(due)
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass

    async def _deliver_responses(self, q: asyncio.Queue, cw: asyncio.StreamWriter,
                                 uw: asyncio.StreamWriter, conn: _Conn) -> None:
        """Deliver the response reads in order, applying the request's fault at its trigger."""
        try:
            while True:
                due, data, fault, scanner = await q.get()
                if data is _CLOSE:
                    with contextlib.suppress(OSError, RuntimeError):
                        cw.write_eof()
                    return
                await _sleep_until(due)
                cut = scanner.feed(data) if (fault and scanner is not None) else None
                if cut is None:
                    cw.write(data)
                    await cw.drain()
                    continue
                self.stats[f"fault_{fault}_done"] += 1
                if fault == "delay_headers":
                    await asyncio.sleep(self.policy.delay_s)
                    cw.write(data)
                    await cw.drain()
                elif fault == "stall":
                    cw.write(data[:cut])
                    await cw.drain()
                    await asyncio.sleep(self.policy.delay_s)
                    cw.write(data[cut:])
                    await cw.drain()
                elif fault == "reset":
                    cw.write(data[:cut])
                    await cw.drain()
                    _rst(cw)
                    _rst(uw)
                    return
                elif fault == "truncate":
                    cw.write(data[:cut + TRUNCATE_EXTRA])
                    await cw.drain()
                    cw.close()  # a clean FIN mid-body
                    _rst(uw)
                    return
        except (ConnectionError, OSError):
            pass


async def _sleep_until(due: float) -> None:
    d = due - time.perf_counter()
    if d > 0:
        await asyncio.sleep(d)
