"""The error table: failed requests grouped by status and cause, with counts and an example.

A record's ``error`` says what happened in words that vary by request (numbers, ids, bytes);
``cause`` maps it to a short, stable label so that equal failures count together:

    http_error        "HTTP <status>" (+ " Retry-After" when the server sent one)
    timeout           "timeout"
    connect_error     the exception name (ClientConnectorError, ...) or "refused"
    disconnected      "reset", "truncated body", "closed before answering", "closed mid-response"
                      or the exception name
    invalid_response  "malformed SSE data", "invalid UTF-8", "error event", "too large",
                      "no finish_reason/[DONE]", "not a completion" or the first words
    cancelled         "cancelled" (or "cancelled before sending")

Pure: works on plain lists, so it is testable without a run.
"""

from __future__ import annotations

import re
from collections import Counter

_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (status, re.compile(pattern, re.I), label)
    for status, pattern, label in (
        ("disconnected", r"reset by peer|ECONNRESET|Errno 104", "reset"),
        ("disconnected",
         r"payload is not completed|TransferEncodingError|ContentLengthError|truncated body",
         "truncated body"),
        ("disconnected", r"before answering", "closed before answering"),
        ("disconnected", r"mid-response", "closed mid-response"),
        ("connect_error", r"refused|Errno 111", "refused"),
        ("connect_error", r"reset by peer|Errno 104", "reset before answering"),
        ("invalid_response", r"invalid UTF-8", "invalid UTF-8"),
        ("invalid_response", r"malformed SSE", "malformed SSE data"),
        ("invalid_response", r"error event", "error event"),
        ("invalid_response", r"larger than", "too large"),
        ("invalid_response", r"finish_reason or data: \[DONE\]", "no finish_reason/[DONE]"),
        ("invalid_response", r"not an OpenAI", "not a completion"),
        ("cancelled", r"never sent", "cancelled before sending"),
    )
)


def cause(status: str, http_status: int | None, error: str | None) -> str:
    """A short stable label for one failure (module docstring)."""
    err = error or ""
    if status == "http_error":
        return f"HTTP {http_status}" + (" Retry-After" if "Retry-After" in err else "")
    if status == "timeout":
        return "timeout"
    for st, pat, label in _RULES:
        if st == status and pat.search(err):
            return label
    if status == "cancelled":
        return "cancelled"
    m = re.match(r"([A-Za-z_][\w.]*)(?::|$)", err)
    return m.group(1) if m else (err[:40] or status)


def error_table(status: list[str], http_status: list[int | None],
                error: list[str | None]) -> list[dict]:
    """One row per (status, cause) of the failed requests, most frequent first:
    ``{"status", "cause", "count", "example"}``."""
    counts: Counter[tuple[str, str]] = Counter()
    example: dict[tuple[str, str], str | None] = {}
    for s, h, e in zip(status, http_status, error, strict=True):
        if s == "ok":
            continue
        k = (s, cause(s, h, e))
        counts[k] += 1
        example.setdefault(k, e)
    return [{"status": s, "cause": c, "count": n, "example": example[(s, c)]}
            for (s, c), n in counts.most_common()]
