"""The PyTorch server's HTTP front end (aiohttp): OpenAI-compatible endpoints over one Engine.

Endpoints: POST /v1/completions, POST /v1/chat/completions (stream or not), GET /v1/models,
GET /health, GET /version (runtime versions and flags), GET /metrics (Prometheus text, a
registry private to the app). Request validation is the sim's (``servers.sim.request``);
prompts are tokenized with the model's tokenizer (chat: its chat template). Streaming sends
one SSE chunk per generated token, the finish reason on the last, then (with
stream_options.include_usage) a usage chunk that also carries ``server_timings`` (queue_s,
prefill_s, decode_s: the layout of the sim's ``sim_timings``, read by the generator into
requests.parquet) and ``pytorch_stats`` (the batch sizes the request was decoded in), then
``data: [DONE]``. Non-streamed bodies carry both too.

The model runs on the engine's worker thread; the event loop only tokenizes, detokenizes and
writes, so streams keep flowing while the model computes.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from servers.pytorch.engine import Engine, Sequence
from servers.sim.faults import error_body
from servers.sim.request import GenerationRequest, RequestError, parse_request
from servers.sim.response import DONE_EVENT, usage

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
JSON = "application/json"
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """What the app needs besides the engine: names, limits and the description for /version."""

    model_name: str
    max_model_len: int
    info: dict[str, Any]


class State:
    def __init__(self, engine: Engine, tokenizer: Any, config: ServerConfig) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.config = config
        self.next_number = 0
        self.created = int(time.time())  # wall clock: a timestamp, not an interval
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(engine, config.model_name))


STATE = web.AppKey("pytorch_state", State)


def make_app(engine: Engine, tokenizer: Any, config: ServerConfig) -> web.Application:
    """The aiohttp app; it starts the engine's thread on startup and stops it on shutdown."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = State(engine, tokenizer, config)
    app.router.add_post("/v1/completions", partial(_generate, chat=False))
    app.router.add_post("/v1/chat/completions", partial(_generate, chat=True))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/version", _version)
    app.router.add_get("/metrics", _metrics)
    app.on_startup.append(_start_engine)
    app.on_shutdown.append(_stop_engine)
    return app


async def _start_engine(app: web.Application) -> None:
    loop = asyncio.get_running_loop()
    engine = app[STATE].engine

    def wake(seqs: list[Sequence]) -> None:  # on the loop, once per engine step
        for s in seqs:
            if s.waiter is not None:
                s.waiter.set()

    engine.notify = lambda seqs: loop.call_soon_threadsafe(wake, seqs)
    engine.start()


async def _stop_engine(app: web.Application) -> None:
    await asyncio.get_running_loop().run_in_executor(None, app[STATE].engine.stop)


# -- generation ---------------------------------------------------------------------------

async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    state = request.app[STATE]
    if state.engine.error is not None:
        return _error(500, f"The model engine failed: {state.engine.error!r}")
    body = await request.read()
    try:
        req = parse_request(body, chat=chat, served_model=state.config.model_name)
        prompt_ids = _prompt_ids(state.tokenizer, orjson.loads(body), chat)
    except RequestError as exc:
        return _error(exc.status, exc.message, exc.param)
    total = len(prompt_ids) + req.max_tokens
    if total > state.config.max_model_len:
        return _error(400, f"This model's maximum context length is "
                      f"{state.config.max_model_len} tokens; the prompt has {len(prompt_ids)} "
                      f"and max_tokens asks for {req.max_tokens}. Shorten either.", "max_tokens")
    seq = Sequence(state.next_number, prompt_ids, req.max_tokens, min_tokens=req.min_tokens,
                   ignore_eos=req.ignore_eos, waiter=asyncio.Event())
    state.next_number += 1
    state.engine.submit(seq)
    try:
        if req.stream:
            return await _stream(request, state, req, seq)
        return await _complete(state, req, seq)
    finally:
        state.engine.abort(seq)  # no-op if it ended; frees the row if the client left


async def _stream(request: web.Request, state: State, req: GenerationRequest,
                  seq: Sequence) -> web.StreamResponse:
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    enc = _Encoder(req.chat, _rid(req.chat, seq.number), int(time.time()),
                   state.config.model_name)
    detok = Detokenizer(state.tokenizer)
    sent = 0
    try:
        if req.chat:
            await resp.write(enc.role())
        while True:
            finish = seq.finish_reason  # read before the tokens: they are appended first
            end = len(seq.output_ids)
            if finish == "abort":
                await resp.write_eof()
                return resp
            parts = [enc.token(detok.push(seq.output_ids[k]),
                               finish if k == end - 1 else None) for k in range(sent, end)]
            sent = end
            if finish is None:
                if parts:
                    await resp.write(b"".join(parts))
            else:
                if not parts:  # the last token went out before its finish was known
                    parts = [enc.token("", finish)]
                tail = enc.usage(len(seq.prompt_ids), end, seq.stats(), seq.timings()) \
                    if req.include_usage else b""
                await resp.write_eof(b"".join(parts) + tail + DONE_EVENT)
                return resp
            seq.waiter.clear()
            if seq.finish_reason is None and len(seq.output_ids) == sent:
                await seq.waiter.wait()
    except ConnectionResetError:
        return resp


async def _complete(state: State, req: GenerationRequest, seq: Sequence) -> web.Response:
    while seq.finish_reason is None:
        seq.waiter.clear()
        if seq.finish_reason is None:
            await seq.waiter.wait()
    if seq.finish_reason == "abort":
        return _error(503, "The server is shutting down; the request was aborted.")
    text = state.tokenizer.decode(seq.output_ids, skip_special_tokens=True)
    choice: dict[str, Any]
    if req.chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "logprobs": None, "finish_reason": seq.finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None,
                  "finish_reason": seq.finish_reason}
    body = {"id": _rid(req.chat, seq.number),
            "object": "chat.completion" if req.chat else "text_completion",
            "created": int(time.time()), "model": state.config.model_name,
            "choices": [choice], "usage": usage(len(seq.prompt_ids), len(seq.output_ids)),
            "server_timings": seq.timings(), "pytorch_stats": seq.stats()}
    return web.Response(body=orjson.dumps(body), content_type=JSON)


def _prompt_ids(tokenizer: Any, data: dict[str, Any], chat: bool) -> list[int]:
    """Token ids of the (already validated) prompt or chat messages."""
    if chat:
        messages = data["messages"]
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
        except Exception as exc:  # jinja errors: bad roles/content for this template
            raise RequestError(400, f"The chat template of this model rejected 'messages': "
                               f"{exc}", "messages") from None
        ids = tokenizer(text, add_special_tokens=False).input_ids
    else:
        prompt = data["prompt"]
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, list):
            vocab = len(tokenizer)
            if any(t < 0 or t >= vocab for t in prompt):
                raise RequestError(400, f"'prompt' token ids must be in [0, {vocab}).",
                                   "prompt")
            ids = list(prompt)
        else:
            ids = tokenizer(prompt).input_ids
    if not ids:
        raise RequestError(400, "The prompt is empty after tokenization; send some text.",
                           "messages" if chat else "prompt")
    return ids


class Detokenizer:
    """Incremental detokenization, one text delta per token (vLLM's method): decode the last
    few tokens with and without the new one and emit the difference; hold text back while it
    ends in an incomplete UTF-8 character (U+FFFD), so the delta may be empty."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self.tok.decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        after = self.tok.decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""


class _Encoder:
    """SSE chunks of one streamed request, in the same layout as the sim (servers.sim.response)."""

    def __init__(self, chat: bool, rid: str, created: int, model: str) -> None:
        self.chat = chat
        self.head = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": created, "model": model}

    def token(self, text: str, finish: str | None) -> bytes:
        choice: dict[str, Any]
        if self.chat:
            choice = {"index": 0, "delta": {"content": text}, "logprobs": None,
                      "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return _event({**self.head, "choices": [choice]})

    def role(self) -> bytes:
        return _event({**self.head, "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
             "finish_reason": None}]})

    def usage(self, prompt_tokens: int, completion_tokens: int,
              stats: dict[str, float], timings: dict[str, float]) -> bytes:
        return _event({**self.head, "choices": [],
                       "usage": usage(prompt_tokens, completion_tokens),
                       "server_timings": timings, "pytorch_stats": stats})


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _rid(chat: bool, number: int) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-pt{number}"


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(status, message, param),
                        content_type=JSON)


# -- other endpoints ----------------------------------------------------------------------

async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = state.config.model_name
    card = {"id": name, "object": "model", "created": state.created,
            "owned_by": "llm-loadgen-pytorch", "root": name, "parent": None,
            "max_model_len": state.config.max_model_len}
    return web.Response(body=orjson.dumps({"object": "list", "data": [card]}),
                        content_type=JSON)


async def _health(request: web.Request) -> web.Response:
    if request.app[STATE].engine.error is not None:
        return web.Response(status=500, text="engine failed")
    return web.Response()


async def _version(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[STATE].config.info), content_type=JSON)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATE].registry)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


class _Collector:
    """Engine gauges and counters, read at scrape time (names like vLLM's, prefix pytorch:)."""

    def __init__(self, engine: Engine, model: str) -> None:
        self.engine = engine
        self.model = model

    def collect(self):
        e, c, labels = self.engine, self.engine.counters, ["model_name"]
        for name, doc, value in (
            ("pytorch:num_requests_running", "Sequences in the running batch.", e.num_running),
            ("pytorch:num_requests_waiting", "Requests waiting for a batch slot.",
             e.num_waiting),
            ("pytorch:batch_size_max", "Largest decode batch so far.", c.batch_max_seen),
        ):
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric([self.model], value)
            yield g
        for name, doc, value in (
            ("pytorch:prompt_tokens", "Prompt tokens prefilled.", c.prompt_tokens),
            ("pytorch:generation_tokens", "Tokens generated.", c.generation_tokens),
            ("pytorch:request_success", "Requests finished (length or stop).",
             c.requests_finished),
            ("pytorch:request_aborted", "Requests aborted (client gone or shutdown).",
             c.requests_aborted),
            ("pytorch:decode_steps", "Batched decode steps run.", c.decode_steps),
            ("pytorch:decode_batch_size_sum", "Sum over decode steps of the batch size "
             "(divide by decode_steps for the mean batch).", c.decode_batch_sum),
        ):
            m = CounterMetricFamily(name, doc, labels=labels)
            m.add_metric([self.model], value)
            yield m


# -- running it ---------------------------------------------------------------------------

async def serve(app: web.Application, host: str, port: int,
                on_ready: Callable[[str], None] | None = None) -> None:
    """Run ``app`` until SIGINT or SIGTERM; ``on_ready(url)`` once it listens."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                           shutdown_timeout=2.0, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    try:
        await site.start()
        bound = runner.addresses[0]
        shown = f"[{host}]" if ":" in host else host
        if on_ready is not None:
            on_ready(f"http://{shown}:{bound[1]}")
        await stop.wait()
    finally:
        await runner.cleanup()
