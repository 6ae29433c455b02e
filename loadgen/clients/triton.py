"""Native Triton clients for streaming text models: gRPC ``ModelStreamInfer`` and the HTTP
``generate_stream`` extension (SSE).

Both send the tensors of servers/triton/protocol.py (``text_input``, ``max_tokens``; with
``--ignore-eos`` also ``ignore_eos`` and ``min_tokens = max_tokens``; ``--extra-body`` entries
as extra tensors or JSON fields) and read one response per streamed chunk:

- a chunk's tokens are the increase of the model's cumulative ``output_tokens`` output when it
  has one (our model, servers/triton/models/llm.py: ``token_count_source = usage``), else one
  per response with text (``chunks``); ``chunk_tokens`` holds the per-chunk counts;
- ``input_tokens`` likewise from the model's ``input_tokens`` output, else the dataset's;
- an error response is ``http_error`` with Triton's message; a stream that ends without a
  final response (``triton_final_response``, or a finish reason) is ``invalid_response``.

gRPC requests are ``ModelInferRequest`` protobufs and HTTP bodies are JSON bytes, both built
before t0 (``prepare``). During a stream the client only keeps each response and its arrival
time; decoding happens after the stream ended. Nothing is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from loadgen.clients.failures import FAILURES, record_cancelled, record_failure
from loadgen.clients.pool import make_session
from loadgen.records import Record

if TYPE_CHECKING:
    from arrivals.workload import Workload
    from loadgen.clients.base import Sender
    from loadgen.engine import EngineOptions
    from servers.triton.protocol import Piece

PROTOCOLS = ("grpc", "http")


@dataclass(frozen=True)
class TritonConfig:
    url: str  # grpc: "host:port" (or grpc://host:port); http: "http://host:port"
    model: str  # Triton's model name
    protocol: str = "grpc"
    ignore_eos: bool = False
    extra_inputs: dict[str, Any] = field(default_factory=dict)  # --extra-body
    timeout_s: float = 600.0
    batched: bool | None = None  # tensors with a batch dim; None: from the model's config
    model_version: str = ""

    @property
    def grpc_target(self) -> str:
        u = self.url
        for prefix in ("grpc://", "http://"):
            if u.startswith(prefix):
                u = u[len(prefix):]
        return u.rstrip("/")

    @property
    def http_base(self) -> str:
        return self.url.rstrip("/")


def finish_pieces(rec: Record, pieces: list[Piece], times: list[float]) -> None:
    """Fill ``rec``'s token times, counts and status from a stream's decoded responses."""
    token_times: list[float] = []
    chunk_tokens: list[int] = []
    out = 0
    reported_out = reported_in = False
    final, error = False, None
    for p, t in zip(pieces, times, strict=True):
        if p.error:
            error = p.error
            break
        if p.output_tokens is not None:
            new, reported_out = p.output_tokens - out, True
        else:
            new = 1 if p.text else 0
        if new > 0:
            token_times.append(t)
            chunk_tokens.append(new)
            out += new
        if p.input_tokens is not None:
            rec.input_tokens, reported_in = p.input_tokens, True
        final = final or p.final
    rec.n_chunks = len(token_times)
    if token_times:
        rec.t_first_token = token_times[0]
        rec.chunk_times = token_times
        rec.chunk_tokens = chunk_tokens
        if len(token_times) > 1:
            rec.max_itl = max(b - a for a, b in zip(token_times, token_times[1:], strict=False))
    rec.output_tokens = out
    rec.output_tokens_source = "usage" if reported_out else "chunks"
    if reported_in:
        rec.input_tokens_source = "usage"
    elif rec.expected_input_tokens is not None:
        rec.input_tokens, rec.input_tokens_source = rec.expected_input_tokens, "dataset"
    if error:
        rec.status, rec.error = "http_error", f"Triton: {error[:300]}"
    elif not final:
        rec.status = "invalid_response"
        rec.error = "stream ended without a final response (no triton_final_response flag " \
                    "and no finish_reason)"
    else:
        rec.status = "ok"


class _TritonBase:
    def __init__(self, cfg: TritonConfig) -> None:
        if cfg.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {cfg.protocol!r}")
        self.cfg = cfg
        self._batched: bool | None = cfg.batched
        self._batched_source = "given" if cfg.batched is not None else None

    @property
    def label(self) -> str:
        return self.cfg.model

    def describe(self) -> dict[str, Any]:
        d = asdict(self.cfg)
        d["batched"] = self._batched
        d["batched_source"] = self._batched_source
        return d

    def _model_config(self) -> dict[str, Any]:
        """The model's config from Triton's HTTP or gRPC model-configuration endpoint."""
        raise NotImplementedError

    def batched(self) -> bool:
        """Whether the model's tensors have a batch dimension (its max_batch_size > 0)."""
        if self._batched is None:
            try:
                self._batched = int(self._model_config().get("max_batch_size", 0)) > 0
                self._batched_source = "model config"
            except Exception as e:  # noqa: BLE001 - any failure: say it, assume our model's
                self._batched, self._batched_source = True, f"assumed (config: {e})"
        return self._batched

    async def preflight(self) -> dict[str, Any]:
        """The model is ready and one tiny request streams to a final response."""
        from loadgen.preflight import PreflightError

        try:
            config = await asyncio.to_thread(self._model_config)
        except Exception as e:  # noqa: BLE001
            raise PreflightError(f"cannot read the config of Triton model {self.cfg.model!r} "
                                 f"at {self.cfg.url} ({type(e).__name__}: {e}); is the server "
                                 "running, and is the model name right?") from e
        self._batched = int(config.get("max_batch_size", 0)) > 0 \
            if self.cfg.batched is None else self.cfg.batched
        self._batched_source = "model config" if self.cfg.batched is None else "given"
        probe = self._payload("Hello", 2, probe=True)
        rec = Record(request_id=-1)
        from loadgen.engine import EngineOptions

        async with self.connect(EngineOptions()) as send:
            await send(probe, rec, time.perf_counter())
        if rec.status != "ok":
            raise PreflightError(f"test request to Triton model {self.cfg.model!r} failed "
                                 f"({rec.status}): {rec.error} (skip this check with "
                                 "--skip-preflight)")
        return {"url": self.cfg.url, "model": self.cfg.model,
                "model_config": config, "probe": {"status": rec.status,
                                                  "output_tokens": rec.output_tokens,
                                                  "output_tokens_source":
                                                      rec.output_tokens_source}}

    def _payload(self, prompt: str, max_tokens: int, probe: bool = False) -> Any:
        raise NotImplementedError

    def prepare(self, workload: Workload) -> Sequence[Any]:
        self.batched()
        outs = workload.output_tokens.tolist()
        return [self._payload(p, o) for p, o in zip(workload.prompts, outs, strict=True)]

    def _inputs(self, prompt: str, max_tokens: int, probe: bool) -> dict[str, Any]:
        from servers.triton.protocol import llm_inputs

        ignore = self.cfg.ignore_eos and not probe
        return llm_inputs(prompt, max_tokens, min_tokens=max_tokens if ignore else 0,
                          ignore_eos=ignore, batched=self.batched(),
                          extra=self.cfg.extra_inputs)


class TritonGrpcClient(_TritonBase):
    """Triton's gRPC ``ModelStreamInfer``: one bidirectional stream per request."""

    kind = "triton-grpc"

    @property
    def base_url(self) -> str:
        return f"grpc://{self.cfg.grpc_target}"

    def _model_config(self) -> dict[str, Any]:
        import tritonclient.grpc as g

        c = g.InferenceServerClient(self.cfg.grpc_target)
        try:
            return c.get_model_config(self.cfg.model, self.cfg.model_version,
                                      as_json=True)["config"]
        finally:
            c.close()

    def _payload(self, prompt: str, max_tokens: int, probe: bool = False) -> Any:
        from servers.triton.protocol import grpc_request

        return grpc_request(self.cfg.model, self._inputs(prompt, max_tokens, probe),
                            model_version=self.cfg.model_version)

    @contextlib.asynccontextmanager
    async def connect(self, opts: EngineOptions) -> AsyncIterator[Sender]:
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        from servers.triton.protocol import decode_grpc_response

        timeout = self.cfg.timeout_s
        clock = time.perf_counter
        async with grpc.aio.insecure_channel(
                self.cfg.grpc_target, options=[("grpc.max_receive_message_length", 1 << 30),
                                               ("grpc.max_send_message_length", 1 << 30)]
        ) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

            async def sender(req: Any, rec: Record, t0: float) -> None:
                resps: list[Any] = []
                times: list[float] = []
                rec.request_bytes = req.ByteSize()
                rec.t_sent = clock() - t0
                call = stub.ModelStreamInfer(timeout=timeout)
                try:
                    await call.write(req)
                    await call.done_writing()
                    async for r in call:
                        times.append(clock() - t0)
                        resps.append(r)
                    rec.t_done = clock() - t0
                except asyncio.CancelledError:
                    call.cancel()
                    rec.t_done = clock() - t0
                    rec.status, rec.error = "cancelled", "cancelled by the generator"
                    raise
                except grpc.aio.AioRpcError as e:
                    rec.t_done = clock() - t0
                    _grpc_error(rec, e, bool(resps), timeout)
                    return
                if times:
                    rec.t_first_byte = times[0]
                rec.response_bytes = sum(r.ByteSize() for r in resps)
                finish_pieces(rec, [decode_grpc_response(r) for r in resps], times)

            yield sender


def _grpc_error(rec: Record, e: Any, had_response: bool, timeout_s: float) -> None:
    import grpc

    code = e.code()
    msg = f"gRPC {code.name}: {e.details()}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        rec.status, rec.error = "timeout", f"no complete response within {timeout_s:g} s ({msg})"
    elif code == grpc.StatusCode.UNAVAILABLE:
        rec.status = "disconnected" if had_response else "connect_error"
        rec.error = msg
    elif code == grpc.StatusCode.CANCELLED:
        rec.status, rec.error = "disconnected", msg
    else:
        rec.status, rec.error = "http_error", msg


class TritonHttpClient(_TritonBase):
    """Triton's HTTP ``POST /v2/models/M/generate_stream`` (server-sent events)."""

    kind = "triton-http"

    @property
    def base_url(self) -> str:
        return self.cfg.http_base

    @property
    def url(self) -> str:
        v = f"/versions/{self.cfg.model_version}" if self.cfg.model_version else ""
        return f"{self.cfg.http_base}/v2/models/{self.cfg.model}{v}/generate_stream"

    def _model_config(self) -> dict[str, Any]:
        import urllib.request

        v = f"/versions/{self.cfg.model_version}" if self.cfg.model_version else ""
        with urllib.request.urlopen(f"{self.cfg.http_base}/v2/models/{self.cfg.model}{v}"
                                    "/config", timeout=10) as r:
            return orjson.loads(r.read())

    def _payload(self, prompt: str, max_tokens: int, probe: bool = False) -> bytes:
        """The JSON body: the generate extension maps each field to the input of that name
        (and adds the batch dimension itself)."""
        body: dict[str, Any] = {"text_input": prompt, "max_tokens": int(max_tokens)}
        if self.cfg.ignore_eos and not probe:
            body["ignore_eos"] = True
            body["min_tokens"] = int(max_tokens)
        body.update(self.cfg.extra_inputs)
        return orjson.dumps(body)

    @contextlib.asynccontextmanager
    async def connect(self, opts: EngineOptions) -> AsyncIterator[Sender]:
        url = self.url
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        clock = time.perf_counter
        async with make_session(opts, self.cfg.timeout_s) as session:

            async def sender(body: bytes, rec: Record, t0: float) -> None:
                rec.request_bytes = len(body)
                rec.t_sent = clock() - t0
                try:
                    async with session.post(url, data=body, headers=headers,
                                            timeout=timeout) as resp:
                        rec.t_first_byte = clock() - t0
                        rec.http_status = resp.status
                        if resp.status >= 300:
                            data = await resp.read()
                            rec.t_done = clock() - t0
                            rec.response_bytes = len(data)
                            rec.status = "http_error"
                            rec.error = f"HTTP {resp.status}: " + \
                                data[:300].decode("utf-8", "replace")
                            return
                        pieces: list[bytes] = []
                        times: list[float] = []
                        async for piece in resp.content.iter_any():
                            times.append(clock() - t0)
                            pieces.append(piece)
                        rec.t_done = clock() - t0
                        rec.response_bytes = sum(map(len, pieces))
                except asyncio.CancelledError:
                    record_cancelled(rec, t0)
                    raise
                except FAILURES as e:
                    record_failure(rec, e, t0, self.cfg.timeout_s)
                    return
                _finish_sse(rec, pieces, times)

            yield sender


def _finish_sse(rec: Record, pieces: list[bytes], times: list[float]) -> None:
    from loadgen.sse import data_events
    from servers.triton.protocol import decode_generate_event

    decoded, ts = [], []
    for data, t in data_events(pieces, times):
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            rec.status = "invalid_response"
            rec.error = f"malformed generate_stream event: {data[:200]!r}"
            return
        if not isinstance(obj, dict):
            rec.status, rec.error = "invalid_response", f"event is not an object: {data[:200]!r}"
            return
        decoded.append(decode_generate_event(obj))
        ts.append(t)
    # generate_stream has no final flag: the response ends after the last one, which is
    # final if the model named a finish reason, or if the server closed the stream cleanly.
    if decoded and not decoded[-1].error and not decoded[-1].final:
        from dataclasses import replace

        decoded[-1] = replace(decoded[-1], final=True)
    finish_pieces(rec, decoded, ts)
