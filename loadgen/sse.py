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

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Any

import msgspec
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


def _normalised(pieces: list[bytes]) -> tuple[bytes, list[int]]:
    """All pieces joined with CRLF and CR line ends made LF, and the end offset of each piece
    in the result. A CRLF split across two reads counts once. O(total bytes)."""
    out: list[bytes] = []
    ends: list[int] = []
    n = 0
    after_cr = False
    for piece in pieces:
        if after_cr and piece.startswith(b"\n"):
            piece = piece[1:]  # the LF of a CRLF whose CR ended the previous read
        after_cr = piece.endswith(b"\r")
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out.append(piece)
        n += len(piece)
        ends.append(n)
    return b"".join(out), ends


def _utf8_problem(data: bytes) -> str | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 at byte {e.start} ({data[max(0, e.start - 20):e.start + 20]!r})"
    return None


def _plain_events(data: bytes, ends: list[int], times: list[float]) -> list[tuple[bytes, float]] | None:
    """``data_events`` of a plain stream (what vLLM, llama.cpp and most servers send: LF
    framing, every event exactly one ``data: `` line), with C-speed checks and one split
    instead of a loop per event; None for anything else (the general loop handles it)."""
    if not data.endswith(b"\n\n"):
        return None
    raw = data[:-2].split(b"\n\n")
    n = len(raw)
    # one newline pair per event and no other newline, and every event starts "data: "
    if (data.count(b"\n") != 2 * n or not data.startswith(b"data: ")
            or data.count(b"\n\ndata: ") != n - 1 or data.count(b"data: ") != n):
        return None
    if len(ends) == 1:
        t = times[0]
        return [(e[6:], t) for e in raw]
    out = []
    j, pos = 0, -1
    for e in raw:
        pos += len(e) + 2  # offset of the event's terminating second LF
        while ends[j] <= pos:
            j += 1
        out.append((e[6:], times[j]))
    return out


def data_events(pieces: list[bytes], times: list[float], fast: bool = True
                ) -> list[tuple[bytes, float]]:
    """The ``data`` of each SSE event in the network reads ``pieces`` (arrival ``times``),
    with the time of the read that completed the event; events without data are skipped.

    Linear in the bytes received, whatever their framing (a giant event arriving in many
    reads costs no more than many small ones). ``fast``: plain streams take
    ``_plain_events`` (same result; ``fast=False`` is the reference it is tested against).
    """
    if len(pieces) != len(times):
        raise ValueError(f"{len(pieces)} pieces but {len(times)} times")
    if not any(b"\r" in p for p in pieces):
        data = b"".join(pieces)
        ends = list(itertools.accumulate(map(len, pieces)))
        if fast and (plain := _plain_events(data, ends, times)) is not None:
            return plain
    else:
        data, ends = _normalised(pieces)
    last_t = times[-1] if times else float("nan")
    events: list[tuple[bytes, float]] = []
    pos, j, n_pieces = 0, 0, len(ends)
    find = data.find
    while True:
        e = find(b"\n\n", pos)
        if e < 0:
            break
        # The event is complete when its terminator's second LF (offset e + 1) has arrived.
        while j < n_pieces and ends[j] <= e + 1:
            j += 1
        events.append((data[pos:e], times[j] if j < n_pieces else last_t))
        pos = e + 2
    rest = data[pos:]
    if rest.strip():
        events.append((rest.strip(b"\n"), last_t))
    out = []
    for raw, t in events:
        d = _event_data(raw.lstrip(b"\n"))
        if d is not None:
            out.append((d, t))
    return out


def _decode_all(events: list[tuple[bytes, float]]) -> list | None:
    """Every event's JSON up to ``[DONE]``, decoded with ONE ``orjson.loads`` of the events
    joined into an array (one C call instead of one per token: about half the CPU of parsing
    a 64-token stream); None when that does not give exactly one value per event (malformed
    data, or data such as ``{..},{..}``), and the caller decodes event by event, which finds
    and names the bad event."""
    datas = []
    for d, _ in events:
        if d == b"[DONE]":
            break
        datas.append(d)
    if not datas:
        return []
    try:
        objs = orjson.loads(b"[" + b",".join(datas) + b"]")
    except orjson.JSONDecodeError:
        return None
    return objs if len(objs) == len(datas) else None


# -- the fast path: a plain stream of well-formed events ------------------------------------
# msgspec decodes each event into these few fields only (the rest of an event is validated
# JSON, skipped without building Python objects): about 3x less CPU than orjson's dicts plus
# the reference loop for a 64-token stream (docs/benchmarks.md). A value of another type
# raises, and the stream goes the reference way, which says what was wrong.
_ABSENT = msgspec.UNSET


class _Delta(msgspec.Struct, gc=False):
    content: Any = None
    reasoning_content: Any = None
    reasoning: Any = None


class _Choice(msgspec.Struct, gc=False):
    text: Any = None
    delta: _Delta | None = None
    finish_reason: Any = None
    logprobs: Any = None


class _Event(msgspec.Struct, gc=False):
    choices: list[_Choice] | None = None
    usage: dict | None = None
    error: Any = _ABSENT
    server_timings: Any = _ABSENT
    sim_timings: Any = _ABSENT
    timings: Any = _ABSENT


_DECODE_EVENTS = msgspec.json.Decoder(list[_Event]).decode


def _plain_stream(pieces: list[bytes], times: list[float]) -> tuple[list, list[float], int] | None:
    """A plain stream decoded at C speed: (the events before ``[DONE]``, as ``_Event``, their
    times, the number of events); None for any other stream, or data that does not decode to
    one well-typed value per event.

    Plain: LF framing, every event one ``data: `` line, ``[DONE]`` (if any) the last event.
    The events' data is made one JSON array with one ``replace`` of the separators
    ``\n\ndata: `` by commas. A JSON text cannot hold a raw newline, so if no LF is left after
    that the separators were the only ones; each replace shortens the data by 7 bytes, which
    counts the events, and a decode to as many values is taken as one value per event. (As in
    ``_decode_all``, a contrived malformed stream could pass: two values in one event that
    ends inside an open string, closed by the next event, e.g. ``{},{"a":"`` then ``"}``; no
    server sends that.)"""
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if not data.startswith(b"data: ") or b"\r" in data:
        return None
    if data.endswith(b"\n\ndata: [DONE]\n\n"):
        body, done = data[6:-16], 1
    elif data == b"data: [DONE]\n\n":
        return [], [], 1
    elif data.endswith(b"\n\n"):
        body, done = data[6:-2], 0
    else:
        return None
    joined = body.replace(b"\n\ndata: ", b",")
    if b"\n" in joined:
        return None
    k = (len(body) - len(joined)) // 7 + 1  # events before [DONE]
    if not joined.isascii():
        try:  # as orjson, refuse invalid UTF-8 anywhere (the reference names the byte)
            joined.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        objs = _DECODE_EVENTS(b"[" + joined + b"]")
    except msgspec.DecodeError:  # malformed JSON, or a field of another type
        return None
    if len(objs) != k:
        return None
    if len(pieces) == 1:
        return objs, [times[0]] * k, k + done
    # event i is complete when its second LF, at offset sum_(j<=i)(len_j + 2) - 1, has arrived:
    # the first read whose end offset passes it
    ends = list(itertools.accumulate(map(len, pieces)))
    lens = [len(e) + 2 for e in data[:6 + len(body)].split(b"\n\n")]
    ts = [times[bisect.bisect_right(ends, p - 1)] for p in itertools.accumulate(lens)]
    return objs, ts, k + done


def _fast_result(objs: list[_Event], ts: list[float], n_events: int, chat: bool
                 ) -> StreamResult | None:
    """``parse_stream``'s loop over ``_Event`` values; None at the first event it does not
    take as is (an error event): the reference loop then says why. ``_logprob_tokens`` and
    ``_cumulative`` are inlined on purpose (as calls, measured: +6.7 µs, 9 % of a 64-token
    stream's parse); the fuzz test in tests/test_fuzz_inputs.py holds the two loops equal."""
    token_times: list[float] = []
    counts: list[tuple[str, int] | None] = []
    usage = timings = kind = finish = None
    add_t, add_c = token_times.append, counts.append
    for e, t in zip(objs, ts, strict=True):
        if e.error is not _ABSENT:
            return None
        u = e.usage
        if u:
            usage = u
        if e.server_timings is not _ABSENT:  # the first key present wins, as in TIMINGS_KEYS
            if type(e.server_timings) is dict:
                timings, kind = e.server_timings, "server_timings"
        elif e.sim_timings is not _ABSENT:
            if type(e.sim_timings) is dict:
                timings, kind = e.sim_timings, "sim_timings"
        elif e.timings is not _ABSENT and type(e.timings) is dict:
            timings, kind = e.timings, "timings"
        choices = e.choices
        if not choices:
            continue
        c = choices[0]
        if chat:
            d = c.delta
            text = (d.content or d.reasoning_content or d.reasoning) if d is not None else None
        else:
            text = c.text
        if text:
            add_t(t)
            lp = c.logprobs
            toks = (lp.get("content") if chat else lp.get("tokens")) if type(lp) is dict else None
            if type(toks) is list:
                add_c(("n", len(toks)))
            else:
                cum = None
                if type(u) is dict and isinstance(u.get("completion_tokens"), int):
                    cum = u["completion_tokens"]
                elif type(e.timings) is dict and isinstance(e.timings.get("predicted_n"), int):
                    cum = e.timings["predicted_n"]
                add_c(("c", cum) if cum is not None else None)
        fr = c.finish_reason
        if fr:
            finish = str(fr)
    return StreamResult(token_times=token_times, usage=usage, finish_reason=finish,
                        done=len(objs) < n_events, n_events=n_events, timings=timings,
                        timings_kind=kind, event_counts=counts)


def parse_stream(pieces: list[bytes], times: list[float], chat: bool,
                 batch: bool = True) -> StreamResult:
    """Token events, usage and end-of-stream markers of an OpenAI completions/chat stream.

    ``batch=False`` splits and decodes each event on its own (the reference the fast paths are
    tested against; same result). With ``batch``, a plain stream of well-formed events takes
    ``_plain_stream`` + ``_fast_result``; anything else the loop below."""
    if batch and pieces and len(pieces) == len(times) and (plain := _plain_stream(pieces, times)):
        fast = _fast_result(*plain, chat)
        if fast is not None:
            return fast
    res = StreamResult()
    events = data_events(pieces, times, fast=batch)
    decoded = _decode_all(events) if batch else None
    for i, (data_, t) in enumerate(events):
        res.n_events += 1
        if data_ == b"[DONE]":
            res.done = True
            continue
        if res.done:
            continue  # anything after [DONE] is ignored, as OpenAI clients do
        try:
            obj = decoded[i] if decoded is not None else orjson.loads(data_)
        except orjson.JSONDecodeError:
            bad = _utf8_problem(data_)
            if bad:
                res.error = f"SSE event {res.n_events}: {bad}"
            else:
                res.error = f"malformed SSE data in event {res.n_events}: {data_[:200]!r}"
            return res
        if not isinstance(obj, dict):
            res.error = f"SSE event {res.n_events} is not a JSON object: {data_[:200]!r}"
            return res
        if "error" in obj:
            err = obj["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            res.error = f"server sent an error event: {str(msg)[:300]}"
            return res
        usage = obj.get("usage")
        if usage:
            if not isinstance(usage, dict):
                res.error = f"SSE event {res.n_events}: usage is not an object: {usage!r:.200}"
                return res
            res.usage = usage
        for key in TIMINGS_KEYS:
            if key in obj:
                if isinstance(obj[key], dict):
                    res.timings, res.timings_kind = obj[key], key
                break
        choices = obj.get("choices")
        if not choices:
            continue
        if not isinstance(choices, list):
            res.error = f"SSE event {res.n_events}: choices is not a list: {choices!r:.200}"
            return res
        choice = choices[0]
        if not isinstance(choice, dict):
            res.error = f"SSE event {res.n_events}: choices[0] is not an object"
            return res
        try:
            text = _output_text(choice, chat)
        except AttributeError:  # delta is not an object
            res.error = f"SSE event {res.n_events}: choices[0].delta is not an object"
            return res
        if text:
            res.token_times.append(t)
            n = _logprob_tokens(choice, chat)
            if n is not None:
                res.event_counts.append(("n", n))
            else:
                c = _cumulative(obj)
                res.event_counts.append(("c", c) if c is not None else None)
        fr = choice.get("finish_reason")
        if fr:
            res.finish_reason = str(fr)
    return res
