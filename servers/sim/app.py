"""The sim's HTTP front end (aiohttp): OpenAI-compatible endpoints over one Engine.

Endpoints: POST /v1/completions, POST /v1/chat/completions (stream or not), GET /v1/models,
GET /health, GET /version, GET /metrics (Prometheus text, a registry private to the app),
POST /tokenize (vLLM/llama-server style token counts), POST /admin/pause?seconds=S. ``make_app`` builds the application; ``start`` runs it on a TCP
port (0 = a free one) and returns a handle; ``serve`` runs it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import orjson
from aiohttp import web

from servers.sim import __version__
from servers.sim.config import SimConfig
from servers.sim.engine import Engine, Sequence
from servers.sim.faults import (
    CONTINUING,
    ENDLESS_INTERVAL_S,
    INVALID_UTF8_TEXT,
    MALFORMED_BODY,
    MALFORMED_EVENT,
    choose_fault,
    error_body,
    fault_error,
    good_tokens,
)
from servers.sim.metrics import make_registry, render
from servers.sim.request import GenerationRequest, RequestError, parse_request
from servers.sim.response import DONE_EVENT, StreamEncoder, completion_body, request_id
from servers.sim.tokens import TokenStream

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
JSON = "application/json"
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body accepted (long prompts)."""


class SimState:
    """Mutable state of one app: the engine, the arrival counter, fault counts."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.engine = Engine(config.costs, config.max_batch, config.eos_prob)
        self.next_number = 0
        self.faults: Counter[str] = Counter()
        self.created = int(time.time())  # wall clock: a timestamp, not an interval
        self.registry = make_registry(self.engine, config.model, lambda: self.faults)


STATE = web.AppKey("sim_state", SimState)


def make_app(config: SimConfig) -> web.Application:
    """The aiohttp application of a sim server; its engine starts and stops with the app."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = SimState(config)
    app.router.add_post("/v1/completions", partial(_generate, chat=False))
    app.router.add_post("/v1/chat/completions", partial(_generate, chat=True))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/version", _version)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/tokenize", _tokenize)
    app.router.add_post("/admin/pause", _pause)
    app.on_startup.append(_start_engine)
    # on_shutdown runs before aiohttp waits for in-flight handlers: aborting every sequence
    # there lets streaming handlers return at once instead of holding the shutdown.
    app.on_shutdown.append(_stop_engine)
    return app


async def _start_engine(app: web.Application) -> None:
    app[STATE].engine.start()


async def _stop_engine(app: web.Application) -> None:
    await app[STATE].engine.stop()


# -- generation ---------------------------------------------------------------------------

async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    state = request.app[STATE]
    config = state.config
    try:
        req = parse_request(await request.read(), chat=chat, served_model=config.model)
    except RequestError as exc:
        return _error(exc.status, exc.message, exc.param)
    number = state.next_number  # arrival order: seeds the text and the fault choice
    state.next_number += 1
    tokens = TokenStream(config.seed, number)
    fault = choose_fault(config.fault_rate, config.fault_kind, tokens.fault_draw)
    if fault is not None:
        state.faults[fault] += 1
        if fault in ("http500", "http429", "http503"):
            status, headers, body = fault_error(fault, number)
            return web.Response(status=status, headers=headers, body=body, content_type=JSON)
    seq = Sequence(number, req.prompt_tokens, req.max_tokens, tokens,
                   min_tokens=req.min_tokens, ignore_eos=req.ignore_eos)
    state.engine.submit(seq)
    try:
        if req.stream:
            return await _stream(request, state, req, seq, fault)
        return await _complete(request, state, req, seq, fault)
    finally:
        state.engine.abort(seq)  # no-op if it ended; frees the slot if the client left


async def _stream(request: web.Request, state: SimState, req: GenerationRequest,
                  seq: Sequence, fault: str | None) -> web.StreamResponse:
    """Write one SSE event per token as soon as the engine emits it."""
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)  # headers go out now, like vLLM: first byte before first token
    enc = StreamEncoder(req.chat, request_id(req.chat, seq.number), int(time.time()),
                        state.config.model)
    fault_at = good_tokens(req.max_tokens) if fault is not None else None
    interval = state.config.stream_interval
    encode = _encode_tokens
    if interval > 1 or req.continuous_usage:
        encode = partial(_encode_chunks, interval=interval,
                         prompt_tokens=req.prompt_tokens if req.continuous_usage else None)
    sent = 0
    try:
        while True:
            end = seq.generated
            finish = seq.finish_reason
            if fault_at is not None and (end > fault_at or finish is not None):
                # The fault takes the place of token number fault_at (0-based).
                upto = min(end, fault_at)
                if fault not in CONTINUING:
                    if upto > sent:
                        await resp.write(_encode_tokens(enc, seq, sent, upto, None, sent == 0))
                    return await _break_stream(request, resp, fault, enc)
                last = finish if upto == end else None  # it stopped early: say so first
                if upto > sent:
                    await resp.write(_encode_tokens(enc, seq, sent, upto, last, sent == 0))
                sent = upto
                if fault == "stall":
                    await asyncio.sleep(state.config.fault_stall_s)
                elif fault == "utf8":
                    await resp.write(enc.raw_text(INVALID_UTF8_TEXT))
                else:  # giant: one chunk, one write
                    await resp.write(enc.raw_text(orjson.dumps("x" * state.config.fault_giant_bytes)))
                fault_at = None
                continue
            if finish is None:
                if end > sent and (sent == 0 or end - sent >= interval):
                    # the hot path: usually exactly one new token
                    await resp.write(encode(enc, seq, sent, end, None, sent == 0))
                    sent = end
                await seq.wait()
                continue
            if finish == "abort":  # the server is shutting down
                await resp.write_eof()
                return resp
            # The last tokens, the usage chunk, [DONE] and the end of the body: one write.
            body = encode(enc, seq, sent, end, finish, sent == 0) if end > sent else b""
            if req.include_usage:
                body += enc.usage(req.prompt_tokens, end, seq.timings())
            await resp.write_eof(body + DONE_EVENT)
            return resp
    except ConnectionResetError:  # the client went away; the finally of _generate aborts
        return resp


def _encode_tokens(enc: StreamEncoder, seq: Sequence, start: int, end: int,
                   finish: str | None, first: bool) -> bytes:
    """The chunks of tokens [start, end) (end > start); token end-1 carries ``finish``."""
    words = seq.tokens
    last = enc.token(words.word(end - 1), finish)
    if end - start == 1 and not (first and enc.chat):
        return last
    parts = [enc.token(words.word(k)) for k in range(start, end - 1)]
    if first and enc.chat:
        parts.insert(0, enc.role())
    parts.append(last)
    return b"".join(parts)


def _encode_chunks(enc: StreamEncoder, seq: Sequence, start: int, end: int,
                   finish: str | None, first: bool, *, interval: int,
                   prompt_tokens: int | None) -> bytes:
    """Tokens [start, end) as one chunk (``interval`` > 1) or one chunk per token, each with
    the usage so far when ``prompt_tokens`` is given (continuous_usage_stats)."""
    words = seq.tokens
    groups = [(start, end)] if interval > 1 else [(k, k + 1) for k in range(start, end)]
    parts = [enc.role()] if first and enc.chat else []
    for a, b in groups:
        parts.append(enc.chunk([words.word(k) for k in range(a, b)],
                               finish if b == end else None,
                               (prompt_tokens, b) if prompt_tokens is not None else None))
    return b"".join(parts)


async def _break_stream(request: web.Request, resp: web.StreamResponse,
                        fault: str | None, enc: StreamEncoder) -> web.StreamResponse:
    if fault == "malformed":
        await resp.write(MALFORMED_EVENT)
        await resp.write_eof()
    elif fault == "reset":
        _reset_connection(request)
    elif fault == "endless":
        await _endless(request, resp, lambda k: enc.raw_text(orjson.dumps(f" more{k}")))
    return resp


async def _endless(request: web.Request, resp: web.StreamResponse, piece) -> None:
    """Write ``piece(k)`` every ENDLESS_INTERVAL_S until the client goes away."""
    k = 0
    while request.transport is not None and not request.transport.is_closing():
        await resp.write(piece(k))
        k += 1
        await asyncio.sleep(ENDLESS_INTERVAL_S)


def _reset_connection(request: web.Request) -> None:
    """Abort the TCP connection with an RST (SO_LINGER 0), so the client sees a reset."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _complete(request: web.Request, state: SimState, req: GenerationRequest,
                    seq: Sequence, fault: str | None) -> web.StreamResponse:
    """Non-streaming: one JSON body when the sequence ends."""
    fault_at = good_tokens(req.max_tokens) if fault == "reset" else None
    while seq.finish_reason is None:
        if fault_at is not None and seq.generated > fault_at:
            _reset_connection(request)
            return web.Response(status=500)  # never reaches the client
        await seq.wait()
    if seq.finish_reason == "abort":
        return _error(503, "The server is shutting down; the request was aborted.")
    if fault == "reset":  # ended before the reset point (early stop)
        _reset_connection(request)
        return web.Response(status=500)
    if fault == "malformed":
        return web.Response(body=MALFORMED_BODY, content_type=JSON)
    if fault == "stall":
        await asyncio.sleep(state.config.fault_stall_s)
    if fault == "endless":
        resp = web.StreamResponse(headers={"Content-Type": JSON})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            await _endless(request, resp, lambda k: b" ")
        return resp
    text = seq.tokens.text(seq.generated)
    if fault == "giant":
        text += "x" * state.config.fault_giant_bytes
    body = completion_body(
        chat=req.chat,
        rid=request_id(req.chat, seq.number),
        created=int(time.time()),
        model=state.config.model,
        text=text,
        finish_reason=seq.finish_reason,
        prompt_tokens=req.prompt_tokens,
        completion_tokens=seq.generated,
        sim_timings=seq.timings(),
    )
    if fault == "utf8":  # the text's first bytes replaced by bytes that are not UTF-8
        key = b'"text":"' if not req.chat else b'"content":"'
        body = body.replace(key, key[:-1] + INVALID_UTF8_TEXT[:-1], 1)
    return web.Response(body=body, content_type=JSON)


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(status, message, param),
                        content_type=JSON)


# -- other endpoints ----------------------------------------------------------------------

async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    card = {"id": state.config.model, "object": "model", "created": state.created,
            "owned_by": "llm-loadgen-sim", "root": state.config.model, "parent": None}
    return web.Response(body=orjson.dumps({"object": "list", "data": [card]}),
                        content_type=JSON)


async def _health(request: web.Request) -> web.Response:
    return web.Response()


async def _version(request: web.Request) -> web.Response:
    state = request.app[STATE]
    c = state.config
    body = {
        "server": "llm-loadgen-sim",
        "version": __version__,
        "model": c.model,
        "costs": c.costs.as_dict(),
        "max_batch": c.max_batch,
        "seed": c.seed,
        "eos_prob": c.eos_prob,
        "fault_rate": c.fault_rate,
        "fault_kind": c.fault_kind,
        "fault_stall_s": c.fault_stall_s,
        "fault_giant_bytes": c.fault_giant_bytes,
        "stream_interval": c.stream_interval,
        "clock": state.engine.sleeper_kind,
    }
    return web.Response(body=orjson.dumps(body), content_type=JSON)


async def _metrics(request: web.Request) -> web.Response:
    body = render(request.app[STATE].registry)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def _tokenize(request: web.Request) -> web.Response:
    """Count tokens as generation would: ``prompt`` or ``content`` (vLLM / llama-server
    completions style) with the whitespace tokenizer, or ``messages`` (vLLM chat style) as a
    chat request counts them. Answers ``{"count", "tokens", "max_model_len"}`` like vLLM;
    the ids are stable word hashes (the sim has no vocabulary file). No special tokens exist,
    so ``add_special_tokens`` changes nothing."""
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _error(400, f"The request body is not valid JSON: {exc}.")
    if not isinstance(data, dict):
        return _error(400, "The request body must be a JSON object.")
    if isinstance(data.get("messages"), list):
        words = [w for m in data["messages"] if isinstance(m, dict)
                 and isinstance(m.get("content"), str) for w in m["content"].split()]
    else:
        text = data.get("prompt", data.get("content"))
        if not isinstance(text, str):
            return _error(400, "'prompt' (or 'content', or 'messages') is required and must be "
                          "a string.", "prompt")
        words = text.split()
    ids = [zlib.crc32(w.encode()) & 0x7FFFFFFF for w in words]
    return web.Response(body=orjson.dumps({"count": len(ids), "tokens": ids,
                                           "max_model_len": None}), content_type=JSON)


async def _pause(request: web.Request) -> web.Response:
    raw = request.query.get("seconds")
    try:
        seconds = float(raw) if raw is not None else math.nan
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        return _error(400, f"query parameter 'seconds' must be a number >= 0, got {raw!r}.",
                      "seconds")
    request.app[STATE].engine.pause(seconds)
    return web.Response(body=orjson.dumps({"paused_s": seconds}), content_type=JSON)


# -- running it ---------------------------------------------------------------------------

@dataclass(slots=True)
class RunningServer:
    """A started sim server: where it listens, its engine, and how to stop it."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def engine(self) -> Engine:
        return self.runner.app[STATE].engine

    async def close(self) -> None:
        """Stop listening, abort in-flight requests, stop the engine."""
        await self.runner.cleanup()


async def start(config: SimConfig) -> RunningServer:
    """Start a sim server on the running loop; ``port=0`` picks a free port."""
    runner = web.AppRunner(make_app(config), access_log=None, handler_cancellation=True,
                           shutdown_timeout=2.0, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=4096)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    address = runner.addresses[0]
    return RunningServer(runner, config.host, int(address[1]))


async def serve(config: SimConfig,
                on_ready: Callable[[RunningServer], None] | None = None) -> None:
    """Run a sim server until SIGINT or SIGTERM; ``on_ready`` is called once it listens."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await start(config)
    try:
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
    finally:
        await server.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see servers.sim.cli."""
    from servers.sim.cli import main as cli_main

    return cli_main(argv)
