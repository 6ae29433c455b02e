"""A lean HTTP/1.1 client on asyncio protocols: the OpenAI client's ``--http-client lean``.

Why: aiohttp's request path costs 157-200 µs of client CPU per streamed request on the
development machine, this client 25 µs and a bare protocol 16-22 µs
(benchmarks/http_client_floor.py, docs/benchmarks.md): aiohttp was a quarter of what a
request cost loadgen end to end. This client does
only what a benchmark's request needs, with the response framing parsed by ``httptools``
(llhttp, the C parser behind Node.js and uvicorn):

- the request's bytes: a head prepared once per pool (method, path, Host, the run's headers)
  plus ``Content-Length`` and the body, which ``Client.prepare`` encoded before t0;
- every network read timestamped on arrival (``data_received``), the body's pieces kept as
  they come (chunked framing removed by llhttp), nothing parsed until the response ends;
- keep-alive: one pool of idle connections, most recently used first; a connection whose
  response was not read to its end, or that the server asked to close, is closed instead;
- ``--max-connections`` (a semaphore), ``--no-keepalive`` (``Connection: close``), TLS
  (verified against the system's trust store unless ``--insecure``), one total timeout per
  request (connecting included), gzip/deflate bodies decompressed per read.

Not done, on purpose: redirects (a 3xx is recorded as an ``http_error`` with its Location),
proxies (the aiohttp path does not use them either: ``trust_env=False``), HTTP/2, retries
(never, anywhere in loadgen). Failures raise the exceptions below; loadgen/clients/failures.py
maps them to the same statuses as aiohttp's.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

import loadgen


class ConnectFailed(ConnectionError):
    """The TCP (or TLS) connection could not be opened: refused, unreachable, bad certificate."""


class ServerClosed(ConnectionError):
    """The server closed the connection before the response ended."""

    def __init__(self, msg: str, status: int | None) -> None:
        super().__init__(msg)
        self.status = status  # the response's status, if its head had arrived


class BadResponse(Exception):
    """The server's bytes are not a valid HTTP/1.1 response (or an unknown Content-Encoding)."""


@dataclass(slots=True)
class Response:
    """One response as the client saw it; times are ``perf_counter() - t0`` of each read."""

    status: int = 0
    t_head: float = float("nan")  # when the read that completed the head arrived
    pieces: list[bytes] = field(default_factory=list)  # the body, as it came (decoded)
    times: list[float] = field(default_factory=list)  # arrival of the read of each piece
    t_end: float = float("nan")  # when the client knew the response had ended
    n: int = 0  # body bytes kept
    truncated: bool = False  # the body passed the cap and was cut off (connection closed)
    retry_after: str | None = None
    location: str | None = None


def tls_context(verify: bool) -> ssl.SSLContext:
    """The system trust store, or (``--insecure``) no verification at all."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _decompressor(encoding: bytes) -> zlib._Decompress | None:
    e = encoding.strip().lower()
    if e in (b"", b"identity"):
        return None
    if e in (b"gzip", b"x-gzip", b"deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    raise BadResponse(f"unsupported Content-Encoding {encoding.decode('latin-1')!r} "
                      "(the lean client decodes gzip and deflate; use --http-client aiohttp)")


class _Connection(asyncio.Protocol):
    """One TCP connection; ``start`` arms it for one response, whose end resolves ``waiter``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future | None = None
        self.resp: Response | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.t0 = 0.0
        self.t = 0.0  # arrival of the read being parsed
        self.cap = 0
        self.error_cap = 0
        self.keep = True  # False once the response asked to close, or was not read to its end
        self.complete = False
        self.length_known = False  # Content-Length or chunked: the end is in the bytes
        self.decomp: zlib._Decompress | None = None

    # ---- the connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.waiter
        if w is None or w.done():
            return
        r = self.resp
        if r is not None and r.status and not self.length_known and exc is None:
            self._finish()  # a body delimited by the connection's (clean) close has ended
            return
        if r is not None and r.status:
            what = "mid-response"
        else:
            what = "before answering (possibly a stale keep-alive connection)"
        if exc is not None:
            why = f": {type(exc).__name__}: {exc}"
        elif r is not None and r.status:  # a clean close before the framing's end
            why = f": truncated body after {r.n} bytes"
        else:
            why = ""
        exc = ServerClosed(f"server closed the connection {what}{why}",
                           r.status if r is not None and r.status else None)
        exc.response = r  # type: ignore[attr-defined]
        w.set_exception(exc)

    def close(self) -> None:
        self.keep = False
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    # ---- one response
    def start(self, t0: float, cap: int, error_cap: int) -> asyncio.Future:
        self.resp = Response()
        self.parser = httptools.HttpResponseParser(self)
        self.t0, self.cap, self.error_cap = t0, cap, error_cap
        self.complete = self.length_known = False
        self.decomp = None
        self.waiter = self.loop.create_future()
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.t = time.perf_counter() - self.t0
        if self.parser is None or self.complete:
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the server switched protocols (Upgrade), not an HTTP/1.1 "
                                   "response"))
        except httptools.HttpParserError as e:
            cause = e.__context__ if isinstance(e.__context__, BadResponse) else e
            if isinstance(cause, BadResponse):
                self._fail(cause)
            else:
                self._fail(BadResponse(f"malformed HTTP response: {type(e).__name__}: {e}"))

    def _fail(self, exc: BaseException) -> None:
        exc.response = self.resp  # type: ignore[attr-defined]  # what had arrived
        self.close()
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(exc)

    def _finish(self) -> None:
        self.complete = True
        self.resp.t_end = time.perf_counter() - self.t0
        if self.decomp is not None and not self.resp.truncated:
            tail = self.decomp.flush()
            if tail:
                self._keep(tail)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(self.resp)

    # ---- httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n == b"content-length" or (n == b"transfer-encoding" and b"chunked" in value.lower()):
            self.length_known = True
        elif n == b"content-encoding":
            self.decomp = _decompressor(value)
        elif n == b"retry-after":
            self.resp.retry_after = value.decode("latin-1")
        elif n == b"location":
            self.resp.location = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        r = self.resp
        r.status = self.parser.get_status_code()
        r.t_head = self.t
        if not self.parser.should_keep_alive():
            self.keep = False
        if r.status >= 300:
            self.cap = self.error_cap
        if r.status in (204, 304) or 100 <= r.status < 200:
            self.length_known = True  # no body

    def on_body(self, body: bytes) -> None:
        if self.resp.truncated:
            return
        if self.decomp is not None:
            try:
                body = self.decomp.decompress(body)
            except zlib.error as e:
                raise BadResponse(f"the compressed body does not decode: {e}") from e
            if not body:
                return
        self._keep(body)

    def _keep(self, body: bytes) -> None:
        r = self.resp
        r.pieces.append(body)
        r.times.append(self.t)
        r.n += len(body)
        if r.n > self.cap:  # cut off: what follows is not read, so the connection is not reused
            r.truncated = True
            self.close()
            self._finish()

    def on_message_complete(self) -> None:
        if 100 <= self.resp.status < 200 and self.resp.status != 101:
            # an interim response (103 Early Hints, an unasked 100 Continue): the real one
            # follows on the same connection, through the same parser
            self.resp = Response()
            self.length_known = False
            self.decomp = None
            return
        if not self.complete:
            self._finish()


@dataclass(frozen=True)
class Target:
    """Where requests go: scheme, host, port, the request path, and the Host header."""

    tls: bool
    host: str
    port: int
    path: str
    host_header: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"the lean HTTP client needs an http:// or https:// URL, got {url!r}")
        tls = u.scheme == "https"
        port = u.port or (443 if tls else 80)
        host = u.hostname
        shown = f"[{host}]" if ":" in host else host
        default = (tls and port == 443) or (not tls and port == 80)
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        return cls(tls, host, port, path, shown if default else f"{shown}:{port}")


def request_head(target: Target, headers: Mapping[str, str], keepalive: bool,
                 method: str = "POST") -> bytes:
    """Everything of a request before its ``Content-Length``; CR or LF in a header is refused
    (it would let a header value inject another header or a second request)."""
    given = {k.lower() for k in headers}
    lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.host_header}"]
    if "user-agent" not in given:
        lines.append(f"User-Agent: llm-loadgen/{loadgen.__version__}")
    if "accept" not in given:
        lines.append("Accept: */*")
    if not keepalive:
        lines.append("Connection: close")
    for k, v in headers.items():
        if any(c in f"{k}{v}" for c in "\r\n\0") or not k or ":" in k:
            raise ValueError(f"HTTP header {k!r} is not a valid header name or has a line "
                             "break in its value")
        if k.lower() in ("host", "content-length", "connection", "transfer-encoding"):
            continue  # the client sets these itself
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


class Pool:
    """Keep-alive connections to one ``Target``; ``post`` sends one request and returns its
    ``Response`` once the body has ended (or was cut off at ``cap`` bytes)."""

    def __init__(self, url: str, headers: Mapping[str, str], *, keepalive: bool = True,
                 limit: int = 0, verify_tls: bool = True) -> None:
        self.target = Target.from_url(url)
        # --header Connection=close (docs/servers.md's advice for llama-server) is honoured as
        # --no-keepalive is: the request says so, and the connection is not reused
        asked = [v for k, v in headers.items() if k.lower() == "connection"]
        keepalive = keepalive and not any(v.strip().lower() == "close" for v in asked)
        self.head = request_head(self.target, headers, keepalive)
        self.keepalive = keepalive
        self.ssl = tls_context(verify_tls) if self.target.tls else None
        self.idle: list[_Connection] = []
        self.all: set[_Connection] = set()
        self.slots = asyncio.Semaphore(limit) if limit > 0 else None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        t = self.target
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(loop), t.host, t.port, ssl=self.ssl,
                server_hostname=t.host if self.ssl else None)
        except OSError as e:  # refused, unreachable, DNS (gaierror), certificate (SSLError)
            raise ConnectFailed(f"cannot connect to {t.host}:{t.port}: "
                                f"{type(e).__name__}: {e}") from e
        self.all.add(conn)
        return conn

    async def post(self, body: bytes, t0: float, *, cap: int, error_cap: int,
                   timeout_s: float) -> Response:
        """Send ``body``; times in the ``Response`` are ``perf_counter() - t0``. Raises
        ``TimeoutError`` after ``timeout_s`` (connecting included), ``ConnectFailed``,
        ``ServerClosed`` or ``BadResponse``. With a connection limit, waits for a free
        connection first (within the timeout's time, as aiohttp's pool)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        if self.slots is None:
            return await self._post(body, t0, cap, error_cap, deadline)
        async with asyncio.timeout_at(deadline):
            await self.slots.acquire()
        try:
            return await self._post(body, t0, cap, error_cap, deadline)
        finally:
            self.slots.release()

    async def _post(self, body: bytes, t0: float, cap: int, error_cap: int,
                    deadline: float) -> Response:
        loop = asyncio.get_running_loop()
        conn = None
        while self.idle:
            c = self.idle.pop()
            if not c.closed:
                conn = c
                break
            self.all.discard(c)
        if conn is None:
            async with asyncio.timeout_at(deadline):
                conn = await self._connect()
        waiter = conn.start(t0, cap, error_cap)
        timer = loop.call_at(deadline, _expire, waiter)
        conn.transport.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        try:
            resp = await waiter
        except BaseException:  # timeout, cancellation, failure: the connection is spent
            conn.close()
            self.all.discard(conn)
            raise
        finally:
            timer.cancel()
        if self.keepalive and conn.keep and not conn.closed:
            self.idle.append(conn)
        else:
            conn.close()
            self.all.discard(conn)
        return resp

    def close(self) -> None:
        for c in self.all:
            c.close()
        self.all.clear()
        self.idle.clear()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("the request's timeout expired"))
