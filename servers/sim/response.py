"""OpenAI response encoding: SSE chunks and JSON bodies, exactly as vLLM/OpenAI send them.

Streaming token chunks are the hot path: the bytes before and after the token text are built
once per request, and each token is spliced in as a pre-escaped JSON string (tokens.WORD_JSON),
so a chunk costs two byte concatenations and no dict or JSON encoding. The result is
byte-identical to ``b"data: " + orjson.dumps(chunk) + b"\\n\\n"`` for the equivalent dict:

    completions  {"id","object":"text_completion","created","model",
                  "choices":[{"index":0,"text":" word","logprobs":null,"finish_reason":null}]}
    chat         {"id","object":"chat.completion.chunk","created","model",
                  "choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,
                              "finish_reason":null}]}
                 preceded once by a chunk with "delta":{"role":"assistant","content":""}

The last token chunk carries finish_reason ("length" or "stop"); then, when
stream_options.include_usage, a chunk with "choices":[] and "usage", plus the sim's own
"sim_timings"; then ``data: [DONE]``.

Off the hot path (``StreamEncoder.chunk``): a chunk carrying several tokens' text (the
server's ``stream_interval``), and, with stream_options.continuous_usage_stats (as vLLM), a
``"usage"`` object after ``"choices"`` in every chunk, with the tokens generated so far.
"""

from __future__ import annotations

from typing import Any

import orjson

from servers.sim.tokens import WORD_JSON

DONE_EVENT = b"data: [DONE]\n\n"


def request_id(chat: bool, number: int) -> str:
    """The response id of request ``number``: ``cmpl-sim<n>`` or ``chatcmpl-sim<n>``."""
    return f"{'chatcmpl' if chat else 'cmpl'}-sim{number}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class StreamEncoder:
    """Pre-built byte pieces for the SSE chunks of one streamed request."""

    __slots__ = ("chat", "_head", "_prefix", "_suffix", "_suffix_running", "_object")

    def __init__(self, chat: bool, rid: str, created: int, model: str) -> None:
        self.chat = chat
        self._object = "chat.completion.chunk" if chat else "text_completion"
        self._head = {"id": rid, "object": self._object, "created": created, "model": model}
        head = orjson.dumps(self._head)[:-1]  # '{"id":..,"model":".."' without the '}'
        if chat:
            self._prefix = b"data: " + head + b',"choices":[{"index":0,"delta":{"content":'
            self._suffix = b'},"logprobs":null,"finish_reason":'
        else:
            self._prefix = b"data: " + head + b',"choices":[{"index":0,"text":'
            self._suffix = b',"logprobs":null,"finish_reason":'
        self._suffix_running = self._suffix + b"null}]}\n\n"

    def token(self, word: int, finish_reason: str | None = None) -> bytes:
        """The chunk of one token (VOCAB index ``word``); the last one names its finish."""
        if finish_reason is None:
            return self._prefix + WORD_JSON[word] + self._suffix_running
        end = orjson.dumps(finish_reason) + b"}]}\n\n"
        return self._prefix + WORD_JSON[word] + self._suffix + end

    def raw_text(self, json_text: bytes) -> bytes:
        """A running token chunk whose text is ``json_text``, spliced in as given (faults use
        it for a giant chunk and for bytes that are not UTF-8)."""
        return self._prefix + json_text + self._suffix_running

    def chunk(self, words: list[int], finish_reason: str | None = None,
              usage_so_far: tuple[int, int] | None = None) -> bytes:
        """One chunk carrying the text of several tokens; with ``usage_so_far`` =
        (prompt_tokens, completion_tokens so far) it also carries that usage."""
        text = b'"' + b"".join(WORD_JSON[w][1:-1] for w in words) + b'"'
        end = orjson.dumps(finish_reason) + b"}]"
        if usage_so_far is not None:
            end += b',"usage":' + orjson.dumps(usage(*usage_so_far))
        return self._prefix + text + self._suffix + end + b"}\n\n"

    def role(self) -> bytes:
        """Chat only: the first chunk, ``"delta":{"role":"assistant","content":""}``."""
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""},
                  "logprobs": None, "finish_reason": None}
        return _event({**self._head, "choices": [choice]})

    def usage(self, prompt_tokens: int, completion_tokens: int,
              sim_timings: dict[str, float]) -> bytes:
        """The include_usage chunk: no choices, usage, and the engine's sim_timings."""
        return _event({**self._head, "choices": [],
                       "usage": usage(prompt_tokens, completion_tokens),
                       "sim_timings": sim_timings})


def completion_body(
    *,
    chat: bool,
    rid: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    sim_timings: dict[str, float],
) -> bytes:
    """The non-streaming JSON body (text_completion or chat.completion)."""
    choice: dict[str, Any]
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "logprobs": None, "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return orjson.dumps({
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage(prompt_tokens, completion_tokens),
        "sim_timings": sim_timings,
    })


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
