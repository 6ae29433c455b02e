"""The OpenAI-compatible client: /v1/completions and /v1/chat/completions, streamed or not.

Request bodies are encoded before the run (``build_body``), so the event loop only sends
prepared bytes. While a stream arrives the client only timestamps and keeps each network read;
parsing happens once the stream has ended (``loadgen.sse``). Nothing is ever retried: every
attempt is one record, with its cause when it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from loadgen.clients import h1
from loadgen.clients.base import Sender
from loadgen.clients.failures import FAILURES, describe, record_cancelled, record_failure
from loadgen.clients.pool import make_session
from loadgen.records import Record
from loadgen.sse import TIMINGS_KEYS, parse_stream

if TYPE_CHECKING:
    from arrivals.workload import Workload
    from loadgen.engine import EngineOptions

ENDPOINTS = {
    "/v1/completions": "completions",
    "/v1/chat/completions": "chat",
}
# vllm bench serve's --backend names, kept so that its command lines keep working.
BACKEND_ENDPOINTS = {
    "openai": "/v1/completions",
    "vllm": "/v1/completions",
    "openai-chat": "/v1/chat/completions",
    "openai-completions": "/v1/completions",
}


HTTP_CLIENTS = ("lean", "aiohttp")  # --http-client
DEFAULT_MAX_RESPONSE_BYTES = 256 << 20
ERROR_BODY_BYTES = 64 << 10
PARSE_IN_THREAD_BYTES = 1 << 20
"""Responses larger than this are parsed in a thread, so the pacer is not held up."""
"""Bytes of an error response kept (its first 300 characters go into the record)."""


class ResponseTooLarge(Exception):
    """The response body passed ``ClientConfig.max_response_bytes``."""


@dataclass(frozen=True)
class ClientConfig:
    base_url: str  # e.g. http://127.0.0.1:8000 (no trailing /v1)
    model: str
    endpoint: str = "/v1/completions"
    stream: bool = True
    include_usage: bool = True
    ignore_eos: bool = False
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 600.0
    extra_body: dict[str, Any] = field(default_factory=dict)
    served_model_name: str | None = None  # the "model" field sent, if it differs from model
    # A response body larger than this is cut off and recorded as invalid_response, so that a
    # runaway stream cannot exhaust memory (a 128k-token stream is ~40 MB).
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    verify_tls: bool = True  # HTTPS certificates are verified unless --insecure
    # ask for usage in every chunk (vLLM's and the sim's stream_options.continuous_usage_stats)
    # so that chunks carrying several tokens are counted exactly (records' chunk_tokens)
    continuous_usage: bool = False
    # the HTTP client: "lean" (loadgen/clients/h1.py: about 6x less client CPU per request
    # for the HTTP part than aiohttp; follows no redirects) or "aiohttp" (the default before
    # 2026-12-03)
    http_client: str = "lean"

    def __post_init__(self) -> None:
        if self.http_client not in HTTP_CLIENTS:
            raise ValueError(f"http_client {self.http_client!r} is not one of "
                             f"{', '.join(HTTP_CLIENTS)}")

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.endpoint

    @property
    def chat(self) -> bool:
        return ENDPOINTS.get(self.endpoint) == "chat"

    def request_headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", **self.headers}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h


def build_body(cfg: ClientConfig, prompt: str, max_tokens: int,
               messages: list[dict[str, str]] | None = None) -> bytes:
    """The JSON body of one request. ``--ignore-eos`` asks for exactly ``max_tokens`` tokens
    with vLLM's ``ignore_eos`` and ``min_tokens`` (also understood by several other servers).
    ``messages`` (a session turn's chat history) is sent as is on chat endpoints; completions
    endpoints get ``prompt`` (the same history, flattened)."""
    body: dict[str, Any] = {"model": cfg.served_model_name or cfg.model}
    if cfg.chat:
        body["messages"] = messages or [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    body["max_tokens"] = int(max_tokens)
    body["stream"] = cfg.stream
    if cfg.stream and (cfg.include_usage or cfg.continuous_usage):
        body["stream_options"] = {"include_usage": True}
        if cfg.continuous_usage:
            body["stream_options"]["continuous_usage_stats"] = True
    if cfg.ignore_eos:
        body["ignore_eos"] = True
        body["min_tokens"] = int(max_tokens)
    body.update(cfg.extra_body)
    return orjson.dumps(body)


def _finish_stream(rec: Record, pieces: list[bytes], times: list[float], chat: bool) -> None:
    res = parse_stream(pieces, times, chat)
    rec.n_chunks = len(res.token_times)
    if res.token_times:
        rec.t_first_token = res.token_times[0]
        rec.chunk_times = res.token_times
        rec.chunk_tokens = res.chunk_tokens()
        if len(res.token_times) > 1:
            tt = res.token_times
            rec.max_itl = max(b - a for a, b in zip(tt, tt[1:], strict=False))
    _set_usage(rec, res.usage, count_chunks=True)
    _set_timings(rec, res.timings, res.timings_kind)
    if res.error:
        rec.status, rec.error = "invalid_response", res.error
    elif not (res.done or res.finish_reason):
        rec.status = "invalid_response"
        rec.error = "stream ended without a finish_reason or data: [DONE] (truncated response)"
    else:
        rec.status = "ok"


def _set_usage(rec: Record, usage: dict | None, count_chunks: bool) -> None:
    """Token counts: the server's ``usage`` when it sent one, else the number of streamed
    chunks (output) and the dataset's expected length (input), each with its source."""
    if usage:
        if usage.get("completion_tokens") is not None:
            rec.output_tokens = int(usage["completion_tokens"])
            rec.output_tokens_source = "usage"
        if usage.get("prompt_tokens") is not None:
            rec.input_tokens = int(usage["prompt_tokens"])
            rec.input_tokens_source = "usage"
    if rec.output_tokens is None and count_chunks and rec.n_chunks:
        rec.output_tokens, rec.output_tokens_source = rec.n_chunks, "chunks"
    if rec.input_tokens is None and rec.expected_input_tokens is not None:
        rec.input_tokens, rec.input_tokens_source = rec.expected_input_tokens, "dataset"


def _seconds(d: dict, key: str, scale: float = 1.0) -> float:
    v = d.get(key)
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        return float(v) * scale
    return math.nan


def _set_timings(rec: Record, timings: dict | None, kind: str | None) -> None:
    """Server-reported per-request timings into ``server_{queue,prefill,decode}_s``.

    ``server_timings``/``sim_timings`` (our servers): ``queue_s``, ``prefill_s``, ``decode_s``
    in seconds. llama-server's ``timings``: ``prompt_ms`` (prompt processing, which yields the
    first token) is the prefill and ``predicted_ms`` the decode; it reports no queue time.
    A field that is missing or not a number >= 0 stays NaN.
    """
    if not timings:
        return
    if kind == "timings":
        rec.server_prefill_s = _seconds(timings, "prompt_ms", 1e-3)
        rec.server_decode_s = _seconds(timings, "predicted_ms", 1e-3)
    else:
        rec.server_queue_s = _seconds(timings, "queue_s")
        rec.server_prefill_s = _seconds(timings, "prefill_s")
        rec.server_decode_s = _seconds(timings, "decode_s")


def _finish_json(rec: Record, data: bytes, chat: bool) -> None:
    try:
        obj = orjson.loads(data)
        choice = obj["choices"][0]
        text = choice["message"].get("content") if chat else choice["text"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as e:
        rec.status = "invalid_response"
        rec.error = f"response is not an OpenAI {'chat ' if chat else ''}completion ({type(e).__name__}): {data[:200]!r}"
        return
    rec.t_first_token = rec.t_done  # non-streamed: the first token is seen with the last
    rec.n_chunks = 1 if text else 0
    rec.status = "ok"
    _set_usage(rec, obj.get("usage"), count_chunks=False)
    for key in TIMINGS_KEYS:
        if isinstance(obj.get(key), dict):
            _set_timings(rec, obj[key], key)
            break


def _finish(rec: Record, pieces: list[bytes], times: list[float], chat: bool, stream: bool,
            n: int, limit: int) -> None:
    """Parse a received body into ``rec`` (status, tokens, times)."""
    if stream:
        _finish_stream(rec, pieces, times, chat)
    elif n <= limit:
        _finish_json(rec, b"".join(pieces), chat)
    if n > limit:
        rec.status = "invalid_response"
        rec.error = (f"response larger than {limit} bytes (--max-response-bytes); cut off "
                     f"after {n} bytes, {len(pieces)} reads")


def _http_error(rec: Record, status: int, retry_after: str | None, data: bytes,
                note: str = "") -> None:
    """An answer with status >= 300: ``http_error``, with Retry-After, ``note`` and the start
    of the body in the error (both HTTP clients)."""
    rec.status = "http_error"
    retry = f" (Retry-After: {retry_after})" if retry_after else ""
    rec.error = f"HTTP {status}{retry}{note}: " + data[:300].decode("utf-8", "replace")


_describe = describe  # older name, kept for imports elsewhere


async def send(
    session: aiohttp.ClientSession,
    cfg: ClientConfig,
    headers: dict[str, str],
    body: bytes,
    rec: Record,
    t0: float,
    timeout: aiohttp.ClientTimeout,
) -> None:
    """Send one request and fill ``rec`` with its times, status and token counts.

    Every outcome ends in ``rec.status``; CancelledError is recorded as ``cancelled`` and
    re-raised. Times are ``time.perf_counter() - t0``.
    """
    clock = time.perf_counter
    chat = cfg.chat
    limit = cfg.max_response_bytes
    rec.t_sent = clock() - t0
    try:
        async with session.post(cfg.url, data=body, headers=headers, timeout=timeout) as resp:
            rec.t_first_byte = clock() - t0
            rec.http_status = resp.status
            if resp.status >= 300:
                data = await _read_capped(resp, ERROR_BODY_BYTES)
                rec.t_done = clock() - t0
                rec.response_bytes = len(data)
                _http_error(rec, resp.status, resp.headers.get("Retry-After"), data)
                return
            pieces: list[bytes] = []
            times: list[float] = []
            append_p, append_t = pieces.append, times.append
            n = 0
            async for piece in resp.content.iter_any():
                append_t(clock() - t0)
                append_p(piece)
                n += len(piece)
                if n > limit:
                    break
            rec.t_done = clock() - t0
            rec.response_bytes = n
            if n > PARSE_IN_THREAD_BYTES:  # a giant response: parse it off the event loop
                await asyncio.to_thread(_finish, rec, pieces, times, chat, cfg.stream, n, limit)
                return
            _finish(rec, pieces, times, chat, cfg.stream, n, limit)
    except asyncio.CancelledError:
        record_cancelled(rec, t0)
        raise
    except FAILURES as e:
        record_failure(rec, e, t0, cfg.timeout_s)


async def send_lean(pool: h1.Pool, cfg: ClientConfig, body: bytes, rec: Record, t0: float) -> None:
    """``send`` on the lean HTTP/1.1 client (loadgen/clients/h1.py): the same record for the
    same exchange, every read timestamped as it arrives."""
    rec.t_sent = time.perf_counter() - t0
    limit = cfg.max_response_bytes
    try:
        r = await pool.post(body, t0, cap=limit, error_cap=ERROR_BODY_BYTES,
                            timeout_s=cfg.timeout_s)
    except asyncio.CancelledError:
        record_cancelled(rec, t0)
        raise
    except FAILURES as e:
        partial = getattr(e, "response", None)  # the head, if it had arrived
        if partial is not None and partial.status:
            rec.http_status, rec.t_first_byte = partial.status, partial.t_head
        record_failure(rec, e, t0, cfg.timeout_s)
        return
    rec.t_first_byte = r.t_head
    rec.http_status = r.status
    rec.t_done = r.t_end
    rec.response_bytes = r.n
    if r.status >= 300:
        note = (f" (Location: {r.location}; --http-client lean follows no redirects: use that "
                "URL, or --http-client aiohttp)") if 300 <= r.status < 400 and r.location else ""
        _http_error(rec, r.status, r.retry_after, b"".join(r.pieces), note)
        return
    if r.n > PARSE_IN_THREAD_BYTES:  # a giant response: parse it off the event loop
        await asyncio.to_thread(_finish, rec, r.pieces, r.times, cfg.chat, cfg.stream, r.n, limit)
        return
    _finish(rec, r.pieces, r.times, cfg.chat, cfg.stream, r.n, limit)


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most about ``limit`` bytes of the body (the rest is left unread; the connection is
    then not reused)."""
    parts: list[bytes] = []
    n = 0
    async for piece in resp.content.iter_any():
        parts.append(piece)
        n += len(piece)
        if n >= limit:
            break
    return b"".join(parts)


class OpenAIClient:
    """The ``Client`` (loadgen/clients/base.py) for OpenAI-compatible endpoints."""

    kind = "openai"

    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg

    @property
    def label(self) -> str:
        return self.cfg.served_model_name or self.cfg.model

    @property
    def base_url(self) -> str:
        return self.cfg.base_url

    def prepare(self, workload: Workload) -> Sequence[bytes]:
        """Every request body, JSON-encoded before t0 so the event loop only sends bytes."""
        outs = workload.output_tokens.tolist()
        ss = workload.sessions
        if self.cfg.chat and ss is not None and ss.messages is not None:
            return [build_body(self.cfg, p, o, m)
                    for p, o, m in zip(workload.prompts, outs, ss.messages, strict=True)]
        return [build_body(self.cfg, p, o) for p, o in zip(workload.prompts, outs, strict=True)]

    @contextlib.asynccontextmanager
    async def connect(self, opts: EngineOptions) -> AsyncIterator[Sender]:
        cfg = self.cfg
        headers = cfg.request_headers()
        if cfg.http_client == "lean":
            pool = h1.Pool(cfg.url, headers, keepalive=getattr(opts, "keepalive", True),
                           limit=opts.connection_limit, verify_tls=cfg.verify_tls)
            try:
                yield functools.partial(send_lean, pool, cfg)  # one coroutine per request
            finally:
                pool.close()
            return
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        async with make_session(opts, cfg.timeout_s, verify_tls=cfg.verify_tls) as session:

            async def sender(body: bytes, rec: Record, t0: float) -> None:
                await send(session, cfg, headers, body, rec, t0, timeout)

            yield sender

    def describe(self) -> dict[str, Any]:
        from loadgen.manifest import redact_headers

        c = self.cfg
        d = asdict(c)
        d["api_key"] = "<redacted>" if c.api_key else None
        d["headers"] = redact_headers(c.headers)
        d["url"] = c.url
        return d

    async def preflight(self) -> dict[str, Any]:
        from loadgen.preflight import preflight

        return await preflight(self.cfg)
