"""The lean HTTP/1.1 client (loadgen/clients/h1.py) against scripted servers on 127.0.0.1.

Each scripted server is a real asyncio TCP server that reads one request head (and its body)
and answers with given bytes, split into given writes with pauses, so framing, reuse, caps,
failures and timeouts are checked byte for byte. The same client against the real reference
server is in tests/test_h1_e2e.py.
"""

from __future__ import annotations

import asyncio
import gzip
import time

import pytest

from loadgen.clients import h1

BODY = b'{"prompt": "hi"}'


class Scripted:
    """A server whose answer to the i-th request is ``answers[i]``: a list of byte strings
    written with ``gap_s`` between them; ``close_after`` closes the connection after them."""

    def __init__(self, answers, gap_s: float = 0.0, close_after: bool = False,
                 silent: bool = False) -> None:
        self.answers = list(answers)
        self.gap_s, self.close_after, self.silent = gap_s, close_after, silent
        self.requests: list[bytes] = []
        self.connections = 0
        self.open_now = 0
        self.max_open = 0
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/completions"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                n = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                             if line.lower().startswith(b"content-length")))
                self.requests.append(head + await reader.readexactly(n))
                if self.silent:
                    await asyncio.sleep(30)
                answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
                for i, part in enumerate(answer):
                    if i and self.gap_s:
                        await asyncio.sleep(self.gap_s)
                    writer.write(part)
                    await writer.drain()
                if self.close_after:
                    return
        finally:
            self.open_now -= 1
            writer.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunked(*parts: bytes) -> list[bytes]:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
    return [head] + [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]


def post(pool: h1.Pool, *, cap: int = 1 << 20, error_cap: int = 1 << 16, timeout_s: float = 5.0):
    return pool.post(BODY, time.perf_counter(), cap=cap, error_cap=error_cap, timeout_s=timeout_s)


def run(coro):
    return asyncio.run(coro)


def test_the_request_is_the_prepared_head_and_body_and_the_connection_is_reused():
    async def go():
        async with Scripted([[ok(b"hello")]]) as srv:
            pool = h1.Pool(srv.url, {"Content-Type": "application/json",
                                     "Authorization": "Bearer k"})
            rs = [await post(pool) for _ in range(3)]
            pool.close()
            return srv, rs

    srv, rs = run(go())
    assert [b"".join(r.pieces) for r in rs] == [b"hello"] * 3
    assert all(r.status == 200 and r.n == 5 and not r.truncated for r in rs)
    assert srv.connections == 1  # keep-alive: three requests, one connection
    head, body = srv.requests[0].split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{srv.port}".encode() in lines
    assert b"Authorization: Bearer k" in lines and b"Content-Type: application/json" in lines
    assert b"Content-Length: %d" % len(BODY) in lines and body == BODY
    assert not any(line.lower().startswith(b"connection:") for line in lines)


def test_chunked_events_keep_each_read_and_its_time():
    events = [b"data: {\"n\": %d}\n\n" % i for i in range(5)]

    async def go():
        async with Scripted([chunked(*events)], gap_s=0.02) as srv:
            pool = h1.Pool(srv.url, {})
            t0 = time.perf_counter()
            r = await pool.post(BODY, t0, cap=1 << 20, error_cap=1 << 16, timeout_s=5)
            pool.close()
            return r

    r = run(go())
    assert b"".join(r.pieces) == b"".join(events)  # the chunk framing is gone
    assert len(r.pieces) == len(r.times) == 5
    # one write every 20 ms: the reads' times are 20 ms apart (±15 ms on a busy machine)
    gaps = [b - a for a, b in zip(r.times, r.times[1:], strict=False)]
    assert all(0.005 < g < 0.2 for g in gaps), gaps
    assert r.t_head <= r.times[0] <= r.t_end and r.t_end >= r.times[-1]


def test_a_body_delimited_by_close_ends_at_the_close_and_is_not_reused():
    async def go():
        answer = [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"part one, ", b"part two"]
        async with Scripted([answer], gap_s=0.01, close_after=True) as srv:
            pool = h1.Pool(srv.url, {})
            rs = [await post(pool), await post(pool)]
            pool.close()
            return srv, rs

    srv, rs = run(go())
    assert [b"".join(r.pieces) for r in rs] == [b"part one, part two"] * 2
    assert srv.connections == 2


def test_gzip_bodies_are_decoded_and_unknown_encodings_refused():
    raw = b"data: {}\n\n" * 50
    gz = gzip.compress(raw)

    async def go(extra):
        async with Scripted([[ok(gz, extra)]]) as srv:
            pool = h1.Pool(srv.url, {})
            try:
                return await post(pool)
            finally:
                pool.close()

    r = run(go(b"Content-Encoding: gzip\r\n"))
    assert b"".join(r.pieces) == raw and r.n == len(raw)
    with pytest.raises(h1.BadResponse, match="unsupported Content-Encoding 'br'"):
        run(go(b"Content-Encoding: br\r\n"))


def test_bytes_that_are_not_http_are_a_bad_response():
    async def go():
        async with Scripted([[b"SSH-2.0-OpenSSH_9.2\r\n\r\n"]]) as srv:
            pool = h1.Pool(srv.url, {})
            try:
                await post(pool)
            finally:
                pool.close()

    with pytest.raises(h1.BadResponse, match="malformed HTTP response"):
        run(go())


def test_a_close_before_the_answer_and_one_mid_body_say_which():
    async def go(answer):
        async with Scripted([answer], close_after=True) as srv:
            pool = h1.Pool(srv.url, {})
            try:
                await post(pool)
            finally:
                pool.close()

    with pytest.raises(h1.ServerClosed, match="before answering") as before:
        run(go([]))
    assert before.value.status is None
    with pytest.raises(h1.ServerClosed, match="mid-response: truncated body after 5 bytes") as mid:
        run(go(chunked(b"12345", b"67890")[:2]))
    assert mid.value.status == 200 and mid.value.response.n == 5


def test_a_body_past_the_cap_is_cut_off_and_its_connection_closed():
    async def go():
        async with Scripted([[ok(b"x" * 10_000)]]) as srv:
            pool = h1.Pool(srv.url, {})
            rs = [await post(pool, cap=100), await post(pool, cap=100)]
            pool.close()
            return srv, rs

    srv, rs = run(go())
    assert all(r.truncated and 100 < r.n <= 10_000 for r in rs)
    assert srv.connections == 2  # the unread rest makes the connection useless


def test_an_error_status_keeps_only_error_cap_bytes_and_retry_after():
    async def go():
        answer = [b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 5000"
                  b"\r\n\r\n" + b"e" * 5000]
        async with Scripted([answer]) as srv:
            pool = h1.Pool(srv.url, {})
            try:
                return await post(pool, error_cap=64)
            finally:
                pool.close()

    r = run(go())
    assert r.status == 503 and r.retry_after == "7" and r.truncated and 64 < r.n <= 5000


def test_a_silent_server_is_a_timeout_after_timeout_s():
    async def go():
        async with Scripted([[ok(b"late")]], silent=True) as srv:
            pool = h1.Pool(srv.url, {})
            t = time.perf_counter()
            try:
                await post(pool, timeout_s=0.3)
            except TimeoutError:
                return time.perf_counter() - t, len(pool.all)
            finally:
                pool.close()
        raise AssertionError("no timeout")

    took, still_open = run(go())
    assert 0.25 < took < 3.0, took  # the timeout, not the server's 30 s
    assert still_open == 0  # the timed-out connection was closed and dropped


def test_a_refused_connection_is_connect_failed_naming_the_address():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go():
        pool = h1.Pool(f"http://127.0.0.1:{port}/v1/completions", {})
        await post(pool)

    with pytest.raises(h1.ConnectFailed, match=f"cannot connect to 127.0.0.1:{port}"):
        run(go())


def test_max_connections_and_no_keepalive():
    async def go(limit, keepalive):
        async with Scripted([[ok(b"hi")]], gap_s=0.0) as srv:
            pool = h1.Pool(srv.url, {}, limit=limit, keepalive=keepalive)
            rs = await asyncio.gather(*(post(pool) for _ in range(6)))
            pool.close()
            return srv, rs

    srv, rs = run(go(1, True))
    assert all(b"".join(r.pieces) == b"hi" for r in rs) and srv.max_open == 1
    assert srv.connections == 1
    srv, rs = run(go(0, False))
    assert all(b"".join(r.pieces) == b"hi" for r in rs)
    assert srv.connections == 6  # a new connection per request
    assert all(b"\r\nConnection: close\r\n" in q for q in srv.requests)


def test_a_connection_close_header_is_honoured_as_no_keepalive():
    async def go():
        async with Scripted([[ok(b"hi")]]) as srv:
            pool = h1.Pool(srv.url, {"connection": "Close"})
            rs = [await post(pool) for _ in range(3)]
            pool.close()
            return srv, rs

    srv, rs = run(go())
    assert all(b"".join(r.pieces) == b"hi" for r in rs)
    assert srv.connections == 3  # not reused, as aiohttp does for this header
    assert all(q.lower().count(b"\r\nconnection: ") == 1 and b"\r\nConnection: close\r\n" in q
               for q in srv.requests)


def test_a_header_with_a_line_break_is_refused_and_urls_map_to_targets():
    t = h1.Target.from_url("https://example.org/prefix/v1/completions?x=1")
    assert (t.tls, t.host, t.port, t.path, t.host_header) == (
        True, "example.org", 443, "/prefix/v1/completions?x=1", "example.org")
    assert h1.Target.from_url("http://[::1]:8000/v1").host_header == "[::1]:8000"
    head = h1.request_head(t, {"User-Agent": "mine/1"}, True).decode()
    assert head.count("User-Agent:") == 1 and "User-Agent: mine/1" in head and "Accept: */*" in head
    with pytest.raises(ValueError, match="line break"):
        h1.request_head(t, {"X-A": "1\r\nX-Injected: 2"}, True)
    with pytest.raises(ValueError, match="http:// or https://"):
        h1.Target.from_url("ftp://example.org/")


def test_an_interim_103_response_is_skipped_for_the_real_one():
    async def go():
        answer = [b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", ok(b"final")]
        async with Scripted([answer], gap_s=0.01) as srv:
            pool = h1.Pool(srv.url, {})
            rs = [await post(pool), await post(pool)]
            pool.close()
            return srv, rs

    srv, rs = run(go())
    assert [(r.status, b"".join(r.pieces)) for r in rs] == [(200, b"final")] * 2
    assert srv.connections == 1


def test_waiting_for_a_connection_under_a_limit_counts_in_the_timeout():
    async def go():
        async with Scripted([[ok(b"late")]], silent=True) as srv:
            pool = h1.Pool(srv.url, {}, limit=1)
            t = time.perf_counter()
            got = await asyncio.gather(post(pool, timeout_s=0.3), post(pool, timeout_s=0.3),
                                       return_exceptions=True)
            took = time.perf_counter() - t
            pool.close()
            return srv, got, took

    srv, got, took = run(go())
    assert all(isinstance(g, TimeoutError) for g in got), got
    # the second timed out while waiting for the connection: both by 0.3 s, not 0.3 + 0.3
    assert srv.max_open == 1 and 0.25 < took < 0.55, took


def test_an_unknown_http_client_is_refused_by_the_client_config():
    from loadgen.clients.openai import ClientConfig

    with pytest.raises(ValueError, match="'curl' is not one of lean, aiohttp"):
        ClientConfig("http://x", "m", http_client="curl")
