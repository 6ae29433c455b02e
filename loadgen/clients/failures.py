"""How a failed HTTP attempt becomes a record: one mapping from exceptions to statuses.

Every aiohttp-based client (OpenAI, Triton HTTP, KServe, generic HTTP) and the lean HTTP/1.1
client (loadgen/clients/h1.py, ``--http-client lean``) end a failed attempt here, so the same
failure gets the same ``status`` and ``error`` whatever the protocol (statuses:
loadgen/records.py, docs/schema.md). Order matters: aiohttp's connection errors are
subclasses of one another.

| exception | status |
|---|---|
| ``TimeoutError`` (``--timeout`` expired) | ``timeout`` |
| ``ClientConnectorError``, h1 ``ConnectFailed`` (refused, unreachable) | ``connect_error`` |
| ``ServerDisconnectedError``, h1 ``ServerClosed`` | ``disconnected`` (says whether before or during the answer) |
| ``ClientPayloadError``, ``ClientOSError``, ``ConnectionError`` | ``disconnected`` once headers arrived, else ``connect_error`` |
| any other ``ClientError``, h1 ``BadResponse`` | ``invalid_response`` |
"""

from __future__ import annotations

import time

import aiohttp

from loadgen.clients.h1 import BadResponse, ConnectFailed, ServerClosed
from loadgen.records import Record

# What a sender catches and hands to ``record_failure`` (CancelledError is not among them).
FAILURES = (TimeoutError, aiohttp.ClientError, ConnectionError, BadResponse)


def describe(e: BaseException) -> str:
    """``Type: message`` (or just the type when the message is empty)."""
    s = str(e)
    return f"{type(e).__name__}: {s}" if s else type(e).__name__


def record_cancelled(rec: Record, t0: float) -> None:
    """The generator cancelled the attempt (Ctrl-C/SIGTERM); the caller re-raises."""
    rec.t_done = time.perf_counter() - t0
    rec.status, rec.error = "cancelled", "cancelled by the generator"


def record_failure(rec: Record, e: BaseException, t0: float, timeout_s: float) -> None:
    """Fill ``rec``'s end time, status and error for the failure ``e`` (one of FAILURES)."""
    rec.t_done = time.perf_counter() - t0
    if isinstance(e, TimeoutError):
        rec.status = "timeout"
        rec.error = f"no complete response within {timeout_s:g} s ({describe(e)})"
    elif isinstance(e, aiohttp.ClientConnectorError | ConnectFailed):
        rec.status, rec.error = "connect_error", describe(e)
    elif isinstance(e, ServerClosed):  # its message says before or during the answer
        rec.status, rec.error = "disconnected", str(e)
    elif isinstance(e, aiohttp.ServerDisconnectedError):
        rec.status = "disconnected"
        before = (" before answering (possibly a stale keep-alive connection)"
                  if rec.http_status is None else " mid-response")
        rec.error = f"server closed the connection{before}: {describe(e)}"
    elif isinstance(e, aiohttp.ClientPayloadError | aiohttp.ClientOSError | ConnectionError):
        rec.status = "disconnected" if rec.http_status is not None else "connect_error"
        rec.error = describe(e)
    else:
        rec.status, rec.error = "invalid_response", describe(e)
