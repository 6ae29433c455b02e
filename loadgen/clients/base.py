"""The seam between the engine and a protocol: what every client kind provides.

The engine knows nothing about OpenAI, Triton or plain HTTP. It asks a ``Client`` for

- ``prepare(workload)``: one payload per request, built before t0 (JSON encoded, tensors
  packed), so the event loop only sends prepared bytes during the run;
- ``connect(opts)``: an async context manager that opens the client's connections (an aiohttp
  pool, a gRPC channel) and yields a ``Sender``: ``await sender(payload, rec, t0)`` sends one
  request and fills ``rec`` (times from ``t0`` on ``time.perf_counter``, status, token counts);
  it must record every outcome in ``rec.status`` and re-raise ``CancelledError``;
- ``describe()``: what the run manifest says about the client (secrets redacted);
- ``label``: a short name for the run directory (usually the model); ``base_url``: the
  server's URL (telemetry scrapes its ``/metrics``);
- ``preflight()``: before t0, check the endpoint is usable (raise ``PreflightError``) and
  return what the server says about itself.

``as_client`` accepts a ``ClientConfig`` (the OpenAI client's settings) for compatibility:
every call site that passed one keeps working.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loadgen.records import Record

if TYPE_CHECKING:
    from arrivals.workload import Workload
    from loadgen.engine import EngineOptions

Sender = Callable[[Any, Record, float], Awaitable[None]]


@runtime_checkable
class Client(Protocol):
    kind: str  # e.g. "openai", "triton-grpc", "kserve", "http"

    @property
    def label(self) -> str: ...

    @property
    def base_url(self) -> str: ...  # the server's URL (telemetry scrapes its /metrics)

    def prepare(self, workload: Workload) -> Sequence[Any]: ...

    def connect(self, opts: EngineOptions) -> AbstractAsyncContextManager[Sender]: ...

    def describe(self) -> dict[str, Any]: ...

    async def preflight(self) -> dict[str, Any]: ...


def as_client(c: Any) -> Client:
    """A ``Client`` from a client or an OpenAI ``ClientConfig``."""
    from loadgen.clients.openai import ClientConfig, OpenAIClient

    if isinstance(c, ClientConfig):
        return OpenAIClient(c)
    if isinstance(c, Client):
        return c
    raise TypeError(f"expected a loadgen Client or ClientConfig, got {type(c).__name__}")
