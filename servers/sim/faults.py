"""Fault injection: which requests fail, how, and the error bodies. Pure, no I/O.

Request n gets the configured fault when its seeded ``fault_draw`` (servers.sim.tokens) is
below ``fault_rate``, so the same seed and arrival order fault the same requests. What the
client sees:

    http500    HTTP 500 at once, OpenAI error JSON (type InternalServerError)
    http429    HTTP 429 at once, ``Retry-After: 1``, OpenAI error JSON (type RateLimitError)
    http503    HTTP 503 at once, ``Retry-After: 2``, OpenAI error JSON (ServiceUnavailableError)
    malformed  streaming: good tokens, then ``data: {not json`` and the end of the body
               (no finish_reason, no [DONE]); non-streaming: status 200, body ``{not json``
    reset      good tokens, then the TCP connection is reset (RST) mid-body
    stall      good tokens, then nothing for ``fault_stall_s`` seconds, then the rest of the
               stream as normal; non-streaming: the body comes ``fault_stall_s`` late
    utf8       good tokens, then a token chunk whose text bytes are not UTF-8, then the rest of
               the stream as normal; non-streaming: the same bytes in the JSON body's text
    giant      good tokens, then ONE token chunk of ``fault_giant_bytes`` bytes of text (a single
               write), then the rest as normal; non-streaming: the text is that long
    endless    good tokens, then a token chunk every ENDLESS_INTERVAL_S forever: no
               finish_reason, no [DONE], the body never ends (until the client leaves);
               non-streaming: headers, then a JSON whitespace byte every ENDLESS_INTERVAL_S

"Good tokens" are the first ``good_tokens(max_tokens)`` tokens; the fault takes the place of
the next one, at the time that token is generated (or when the sequence ends, if it stops
early), so the client has a full iteration to read the good ones.
"""

from __future__ import annotations

import orjson

GOOD_TOKENS = 2
"""Tokens sent normally before a mid-stream fault (fewer when max_tokens is small)."""

MALFORMED_EVENT = b"data: {not json\n\n"
MALFORMED_BODY = b"{not json"
INVALID_UTF8_TEXT = b'" \xff\xfe\xc3("'
"""A JSON string whose bytes are not UTF-8 (a lone continuation and a truncated sequence)."""
ENDLESS_INTERVAL_S = 0.01
CONTINUING = frozenset({"stall", "utf8", "giant"})
"""Mid-stream faults after which the stream goes on as normal."""


def choose_fault(fault_rate: float, fault_kind: str, fault_draw: float) -> str | None:
    """The fault for a request whose seeded uniform draw is ``fault_draw``, or None."""
    return fault_kind if fault_draw < fault_rate else None


def good_tokens(max_tokens: int) -> int:
    """Tokens sent before a mid-stream fault: min(GOOD_TOKENS, max_tokens - 1)."""
    return min(GOOD_TOKENS, max_tokens - 1)


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    """An OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return orjson.dumps(
        {"error": {"message": message, "type": ERROR_TYPES.get(status, "APIError"),
                   "param": param, "code": status}}
    )


ERROR_TYPES: dict[int, str] = {
    400: "BadRequestError",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


def fault_error(kind: str, request_number: int) -> tuple[int, dict[str, str], bytes]:
    """(status, extra headers, body) of an immediate HTTP-error fault (http500/429/503)."""
    if kind == "http500":
        return 500, {}, error_body(
            500, f"Simulated internal server error (fault injection, request {request_number})."
        )
    if kind == "http429":
        return 429, {"Retry-After": "1"}, error_body(
            429, f"Simulated rate limit (fault injection, request {request_number}); "
            "retry after 1 s."
        )
    if kind == "http503":
        return 503, {"Retry-After": "2"}, error_body(
            503, f"Simulated overload (fault injection, request {request_number}); "
            "retry after 2 s."
        )
    raise ValueError(f"fault kind {kind!r} is not an HTTP-error fault (http500, http429, http503)")
