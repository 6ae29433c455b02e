"""An OpenAI-compatible gateway in front of Triton, so Triton sits behind the same endpoint as
every other runtime.

    client --HTTP/SSE--> gateway (aiohttp) --gRPC ModelStreamInfer--> tritonserver

Endpoints: ``POST /v1/completions`` and ``/v1/chat/completions`` (streamed or not; requests are
validated as by the other servers, ``servers.sim.request``), ``GET /v1/models`` (the served
name, listed only while Triton says the model is ready), ``/health`` (Triton server and model
ready), ``/metrics`` (Triton's own Prometheus text, passed through, followed by the gateway's
counters), ``/version`` (Triton's server metadata, the model's config and the gateway's flags).

Each request becomes one gRPC stream carrying one ``ModelInferRequest`` with the tensors of
servers/triton/protocol.py; each streamed response (one per token) becomes one SSE chunk;
``usage`` comes from the model's ``input_tokens``/``output_tokens`` outputs. A chat request
sends its messages as JSON with ``chat = true``: the model applies its tokenizer's chat
template (the gateway has no tokenizer). If the HTTP client goes away the gRPC call is
cancelled, and Triton cancels the request. The gateway's own cost is measured in
docs/servers.md (gateway vs native client, same load).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import grpc
import orjson
from aiohttp import web

from servers.sim.faults import error_body
from servers.sim.request import RequestError, parse_request
from servers.sim.response import DONE_EVENT, usage
from servers.triton.protocol import Piece, decode_grpc_response, grpc_request, llm_inputs

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
JSON = "application/json"


@dataclass(frozen=True)
class GatewayConfig:
    served_model_name: str  # the id clients send
    triton_model: str  # the Triton model it maps to
    grpc_target: str  # "127.0.0.1:8001"
    metrics_url: str | None = None  # Triton's http://127.0.0.1:8002/metrics
    batched: bool = True  # the model's max_batch_size > 0: tensors carry a batch dimension
    info: dict[str, Any] = field(default_factory=dict)  # extra content of /version


@dataclass
class Counters:
    requests: int = 0
    ok: int = 0
    failed: int = 0
    cancelled: int = 0
    output_tokens: int = 0


class Gateway:
    """State of one gateway app: the gRPC channel to Triton and counters."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.counters = Counters()
        self.created = int(time.time())  # a timestamp for /v1/models, not an interval
        self.number = 0
        self.channel: grpc.aio.Channel | None = None
        self.stub: Any = None
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        from tritonclient.grpc import service_pb2_grpc

        self.channel = grpc.aio.insecure_channel(
            self.cfg.grpc_target, options=[("grpc.max_receive_message_length", 1 << 30),
                                           ("grpc.max_send_message_length", 1 << 30)])
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                          trust_env=False)

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.channel is not None:
            await self.channel.close()

    async def model_ready(self) -> tuple[bool, str]:
        from tritonclient.grpc import service_pb2

        try:
            live = await self.stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5)
            if not live.ready:
                return False, "Triton server is not ready"
            r = await self.stub.ModelReady(service_pb2.ModelReadyRequest(
                name=self.cfg.triton_model), timeout=5)
        except grpc.aio.AioRpcError as e:
            return False, f"Triton gRPC {self.cfg.grpc_target}: {e.code().name} {e.details()}"
        return bool(r.ready), "" if r.ready else f"model {self.cfg.triton_model!r} not ready"

    async def stream(self, inputs: dict, request_id: str) -> AsyncIterator[Piece]:
        """Send one request to Triton and yield its streamed responses as Pieces."""
        call = self.stub.ModelStreamInfer()
        try:
            await call.write(grpc_request(self.cfg.triton_model, inputs, request_id))
            await call.done_writing()
            async for resp in call:
                piece = decode_grpc_response(resp)
                yield piece
                if piece.final or piece.error:
                    return
        finally:
            call.cancel()  # no-op once the call ended; cancels Triton's request otherwise


GATEWAY = web.AppKey("triton_gateway", Gateway)


def make_app(cfg: GatewayConfig) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    gw = Gateway(cfg)
    app[GATEWAY] = gw
    app.router.add_post("/v1/completions", partial(_generate, chat=False))
    app.router.add_post("/v1/chat/completions", partial(_generate, chat=True))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/version", _version)

    async def on_startup(app: web.Application) -> None:
        await gw.start()

    async def on_cleanup(app: web.Application) -> None:
        await gw.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(status, message, param),
                        content_type=JSON)


def _prompt_text(data: dict[str, Any], chat: bool) -> str:
    """The text_input tensor: the prompt, or the chat messages as JSON."""
    if chat:
        return orjson.dumps(data["messages"]).decode()
    prompt = data["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError(400, "This gateway accepts 'prompt' as a string (token id lists "
                           "are not supported: the Triton model tokenizes).", "prompt")
    return prompt


async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    cfg = gw.cfg
    body = await request.read()
    try:
        req = parse_request(body, chat=chat, served_model=cfg.served_model_name)
        text = _prompt_text(orjson.loads(body), chat)
    except RequestError as exc:
        return _error(exc.status, exc.message, exc.param)
    inputs = llm_inputs(text, req.max_tokens, min_tokens=req.min_tokens,
                        ignore_eos=req.ignore_eos, chat=chat, batched=cfg.batched)
    gw.number += 1
    gw.counters.requests += 1
    rid = f"{'chatcmpl' if chat else 'cmpl'}-tg{gw.number}"
    pieces = gw.stream(inputs, rid)
    try:
        first = await anext(pieces)
    except StopAsyncIteration:
        gw.counters.failed += 1
        return _error(502, "Triton ended the stream without a response")
    except grpc.aio.AioRpcError as e:
        gw.counters.failed += 1
        return _error(502, f"Triton gRPC error: {e.code().name}: {e.details()}")
    if first.error:
        gw.counters.failed += 1
        await pieces.aclose()
        return _error(400, f"Triton: {first.error}")
    try:
        if req.stream:
            return await _stream(request, gw, req, rid, first, pieces)
        return await _complete(gw, req, rid, first, pieces)
    finally:
        await pieces.aclose()


class _Chunks:
    """SSE chunks of one streamed response, in the layout of the other servers."""

    def __init__(self, chat: bool, rid: str, model: str) -> None:
        self.chat = chat
        self.head = {"id": rid, "object": "chat.completion.chunk" if chat else
                     "text_completion", "created": int(time.time()), "model": model}

    def token(self, text: str, finish: str | None) -> bytes:
        if self.chat:
            choice = {"index": 0, "delta": {"content": text}, "logprobs": None,
                      "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**self.head, "choices": [choice]}) + b"\n\n"

    def role(self) -> bytes:
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                  "finish_reason": None}
        return b"data: " + orjson.dumps({**self.head, "choices": [choice]}) + b"\n\n"

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return b"data: " + orjson.dumps({**self.head, "choices": [],
                                          "usage": usage(prompt_tokens, completion_tokens)}) \
            + b"\n\n"

    @staticmethod
    def error(message: str) -> bytes:
        return b"data: " + error_body(500, message) + b"\n\n"


async def _stream(request: web.Request, gw: Gateway, req: Any, rid: str, first: Piece,
                  pieces: AsyncIterator[Piece]) -> web.StreamResponse:
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    enc = _Chunks(req.chat, rid, gw.cfg.served_model_name)
    n_in, n_out, finish = 0, 0, None
    try:
        if req.chat:
            await resp.write(enc.role())
        piece: Piece | None = first
        while piece is not None:
            if piece.error:
                gw.counters.failed += 1
                await resp.write_eof(enc.error(f"Triton: {piece.error}"))
                return resp
            n_in = piece.input_tokens if piece.input_tokens is not None else n_in
            counted = piece.output_tokens if piece.output_tokens is not None else n_out + 1
            if counted > n_out or piece.text:
                finish = piece.finish_reason or None
                await resp.write(enc.token(piece.text, finish))
            elif piece.finish_reason:  # an empty last response: only the finish reason
                finish = piece.finish_reason
                await resp.write(enc.token("", finish))
            n_out = max(n_out, counted)
            if piece.final:
                break
            piece = await anext(pieces, None)
        tail = enc.usage(n_in, n_out) if req.include_usage else b""
        await resp.write_eof(tail + DONE_EVENT)
        gw.counters.ok += 1
        gw.counters.output_tokens += n_out
    except (ConnectionResetError, asyncio.CancelledError):
        gw.counters.cancelled += 1
        raise
    except grpc.aio.AioRpcError as e:
        gw.counters.failed += 1
        await resp.write_eof(enc.error(f"Triton gRPC error: {e.code().name}: {e.details()}"))
    return resp


async def _complete(gw: Gateway, req: Any, rid: str, first: Piece,
                    pieces: AsyncIterator[Piece]) -> web.Response:
    texts, n_in, n_out, finish = [], 0, 0, "length"
    piece: Piece | None = first
    while piece is not None:
        if piece.error:
            gw.counters.failed += 1
            return _error(500, f"Triton: {piece.error}")
        texts.append(piece.text)
        n_in = piece.input_tokens if piece.input_tokens is not None else n_in
        n_out = piece.output_tokens if piece.output_tokens is not None else n_out + 1
        finish = piece.finish_reason or finish
        if piece.final:
            break
        piece = await anext(pieces, None)
    text = "".join(texts)
    if req.chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "logprobs": None, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    gw.counters.ok += 1
    gw.counters.output_tokens += n_out
    body = {"id": rid, "object": "chat.completion" if req.chat else "text_completion",
            "created": int(time.time()), "model": gw.cfg.served_model_name,
            "choices": [choice], "usage": usage(n_in, n_out)}
    return web.Response(body=orjson.dumps(body), content_type=JSON)


async def _models(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    ready, _ = await gw.model_ready()
    cards = [{"id": gw.cfg.served_model_name, "object": "model", "created": gw.created,
              "owned_by": "triton", "root": gw.cfg.triton_model, "parent": None}] if ready else []
    return web.Response(body=orjson.dumps({"object": "list", "data": cards}), content_type=JSON)


async def _health(request: web.Request) -> web.Response:
    ready, why = await request.app[GATEWAY].model_ready()
    return web.Response(status=200 if ready else 503, text="ok" if ready else why)


async def _metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    text = ""
    if gw.cfg.metrics_url and gw.http is not None:
        try:
            async with gw.http.get(gw.cfg.metrics_url) as r:
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError) as e:
            text = f"# Triton metrics unavailable at {gw.cfg.metrics_url}: {e}\n"
    c, labels = gw.counters, f'{{model="{gw.cfg.served_model_name}"}}'
    own = "".join(
        f"# HELP {name} {doc}\n# TYPE {name} counter\n{name}{labels} {value}\n"
        for name, doc, value in (
            ("triton_gateway_requests_total", "Requests received by the gateway.", c.requests),
            ("triton_gateway_requests_ok_total", "Requests answered completely.", c.ok),
            ("triton_gateway_requests_failed_total", "Requests that failed.", c.failed),
            ("triton_gateway_requests_cancelled_total", "Requests whose client left.",
             c.cancelled),
            ("triton_gateway_output_tokens_total", "Tokens streamed to clients.",
             c.output_tokens)))
    return web.Response(text=text + own, headers={"Content-Type": "text/plain; version=0.0.4"})


async def _version(request: web.Request) -> web.Response:
    from google.protobuf.json_format import MessageToDict
    from tritonclient.grpc import service_pb2

    gw = request.app[GATEWAY]
    out: dict[str, Any] = {"server": "llm-loadgen-triton-gateway", **gw.cfg.info}
    try:
        meta = await gw.stub.ServerMetadata(service_pb2.ServerMetadataRequest(), timeout=5)
        out["triton"] = MessageToDict(meta)
        cfg = await gw.stub.ModelConfig(service_pb2.ModelConfigRequest(
            name=gw.cfg.triton_model), timeout=5)
        out["model_config"] = MessageToDict(cfg.config)
    except grpc.aio.AioRpcError as e:
        out["triton"] = {"unavailable": f"{e.code().name}: {e.details()}"}
    return web.Response(body=orjson.dumps(out), content_type=JSON)
