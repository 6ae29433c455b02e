"""Parsing an OpenAI-style server-sent-event stream after it has been received.

During a stream the client only appends each network read and its arrival time to two lists
(the cheapest possible per-chunk work on the event loop); this module turns those reads into
token events afterwards. An event's time is the arrival time of the read that completed it
(its terminating blank line), i.e. when the client could first have shown it to a user.

SSE framing (https://html.spec.whatwg.org/multipage/server-sent-events.html): events are
separated by a blank line; each ``data:`` line adds to the event's data; lines starting with
``:`` are comments; other fields (``event:``, ``id:``, ``retry:``) are ignored here.
OpenAI streams end with ``data: [DONE]``.

Two things servers add beyond OpenAI's format are kept too (still after the stream ended):
- per-request server timings: ``server_timings`` or the sim's ``sim_timings``
  ({queue_s, prefill_s, decode_s}), or llama-server's ``timings`` (prompt_ms, predicted_ms,
  ...), from the last event that carries them;
- per-event token counts, where the server reports them: a cumulative count of generated
  tokens in each event (``usage.completion_tokens`` with vLLM's/the sim's
  ``stream_options.continuous_usage_stats``, or llama-server's ``timings.predicted_n`` with
  ``timings_per_token``), or the per-token ``logprobs`` list of the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson


@dataclass(slots=True)
class StreamResult:
    token_times: list[float] = field(default_factory=list)  # one per event with output text
    usage: dict | None = None
    finish_reason: str | None = None
    done: bool = False  # saw data: [DONE]
    error: str | None = None  # malformed data or an error event; the stream is invalid
    n_events: int = 0
    timings: dict | None = None  # the server's per-request timings (see module docstring)
    timings_kind: str | None = None  # "server_timings" | "sim_timings" | "timings" (llama.cpp)
    # per token event: tokens it carried (logprobs) or the cumulative count after it; None
    # where the event said nothing (then no per-chunk counts are derived, see chunk_tokens)
    event_counts: list[tuple[str, int] | None] = field(default_factory=list)

    def chunk_tokens(self) -> list[int] | None:
        """Tokens carried by each token event, when every one of them reported a count.

        A cumulative count c_i (the tokens generated up to and including event i) gives
        k_i = c_i - c_(i-1) with c_(-1) = 0: tokens that produced no text (held back, special
        tokens) are counted with the next event that has text. None if any event lacks a
        count, the events mix the two kinds, or a count is below 1 (counts that do not add up).
        """
        counts = self.event_counts
        if not counts or any(c is None for c in counts):
            return None
        kinds = {c[0] for c in counts}  # type: ignore[index]
        if len(kinds) != 1:
            return None
        values = [c[1] for c in counts]  # type: ignore[index]
        if kinds == {"c"}:
            values = [b - a for a, b in zip([0, *values[:-1]], values, strict=True)]
        return values if min(values) >= 1 else None


def _event_data(event: bytes) -> bytes | None:
    """The data of one SSE event (data lines joined by newlines), or None if it has none."""
    if event.startswith(b"data:") and b"\n" not in event:  # fast path: a single data line
        d = event[5:]
        return d[1:] if d.startswith(b" ") else d
    parts = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            d = line[5:]
            parts.append(d[1:] if d.startswith(b" ") else d)
    return b"\n".join(parts) if parts else None


def _output_text(choice: dict, chat: bool) -> str | None:
    if not chat:
        return choice.get("text")
    delta = choice.get("delta") or {}
    # Reasoning models stream their thinking in a separate field; it is output all the same.
    return delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")


TIMINGS_KEYS = ("server_timings", "sim_timings", "timings")


def _logprob_tokens(choice: dict, chat: bool) -> int | None:
    """Tokens in a chunk's logprobs (completions: ``tokens`` list; chat: ``content`` list)."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    toks = lp.get("content") if chat else lp.get("tokens")
    return len(toks) if isinstance(toks, list) else None


def _cumulative(obj: dict) -> int | None:
    """Generated tokens so far, from continuous usage stats or llama.cpp's per-token timings."""
    u = obj.get("usage")
    if isinstance(u, dict) and isinstance(u.get("completion_tokens"), int):
        return u["completion_tokens"]
    t = obj.get("timings")
    if isinstance(t, dict) and isinstance(t.get("predicted_n"), int):
        return t["predicted_n"]
    return None


def data_events(pieces: list[bytes], times: list[float]) -> list[tuple[bytes, float]]:
    """The ``data`` of each SSE event in the network reads ``pieces`` (arrival ``times``),
    with the time of the read that completed the event; events without data are skipped."""
    buf = b""
    last_t = times[-1] if times else float("nan")
    events: list[tuple[bytes, float]] = []
    for piece, t in zip(pieces, times, strict=True):
        buf = buf + piece if buf else piece
        if b"\r" in buf and not buf.endswith(b"\r"):
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n\n" not in buf:
            continue
        *complete, buf = buf.split(b"\n\n")
        events.extend((e, t) for e in complete)
    if buf.strip():
        events.append((buf.replace(b"\r\n", b"\n").strip(b"\n"), last_t))
    out = []
    for raw, t in events:
        data = _event_data(raw.lstrip(b"\n"))
        if data is not None:
            out.append((data, t))
    return out


def parse_stream(pieces: list[bytes], times: list[float], chat: bool) -> StreamResult:
    """Token events, usage and end-of-stream markers of an OpenAI completions/chat stream."""
    res = StreamResult()
    for data, t in data_events(pieces, times):
        res.n_events += 1
        if data == b"[DONE]":
            res.done = True
            continue
        if res.done:
            continue  # anything after [DONE] is ignored, as OpenAI clients do
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            res.error = f"malformed SSE data in event {res.n_events}: {data[:200]!r}"
            return res
        if not isinstance(obj, dict):
            res.error = f"SSE event {res.n_events} is not a JSON object: {data[:200]!r}"
            return res
        if "error" in obj:
            err = obj["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            res.error = f"server sent an error event: {str(msg)[:300]}"
            return res
        if obj.get("usage"):
            res.usage = obj["usage"]
        for key in TIMINGS_KEYS:
            if key in obj:
                if isinstance(obj[key], dict):
                    res.timings, res.timings_kind = obj[key], key
                break
        choices = obj.get("choices") or ()
        if not choices:
            continue
        choice = choices[0]
        if not isinstance(choice, dict):
            res.error = f"SSE event {res.n_events}: choices[0] is not an object"
            return res
        if _output_text(choice, chat):
            res.token_times.append(t)
            n = _logprob_tokens(choice, chat)
            if n is not None:
                res.event_counts.append(("n", n))
            else:
                c = _cumulative(obj)
                res.event_counts.append(("c", c) if c is not None else None)
        if choice.get("finish_reason"):
            res.finish_reason = choice["finish_reason"]
    return res
