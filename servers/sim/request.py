"""Parsing and validation of OpenAI completions/chat requests. Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from servers.sim.model import count_chat_tokens, count_prompt_tokens

DEFAULT_MAX_TOKENS = 16
"""max_tokens when a request leaves it out or sends null."""


class RequestError(ValueError):
    """A request the server refuses: HTTP ``status``, an OpenAI-style message, the field."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What the engine needs from a request, after validation."""

    chat: bool
    prompt_tokens: int
    max_tokens: int
    min_tokens: int = 0
    ignore_eos: bool = False
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False
    """stream_options.continuous_usage_stats (vLLM): usage in every chunk, cumulative."""


def parse_request(body: bytes, *, chat: bool, served_model: str) -> GenerationRequest:
    """Validate a /v1/completions (``chat=False``) or /v1/chat/completions body.

    Raises RequestError: 404 for a model other than ``served_model`` (a missing model means
    the served one), 400 naming the field for anything malformed.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise RequestError(
            400, f"The request body must be a JSON object, got {type(data).__name__}."
        )
    model = data.get("model")
    if model is not None and model != served_model:
        if not isinstance(model, str):
            raise RequestError(400, f"'model' must be a string, got {model!r}.", "model")
        raise RequestError(404, f"The model `{model}` does not exist.", "model")

    prompt_tokens = _chat_tokens(data) if chat else _prompt_tokens(data)

    # Chat: max_completion_tokens replaces the deprecated max_tokens when both are given.
    field = "max_tokens"
    if chat and data.get("max_completion_tokens") is not None:
        field = "max_completion_tokens"
    max_tokens = _optional_int(data, field, DEFAULT_MAX_TOKENS, minimum=1)
    min_tokens = _optional_int(data, "min_tokens", 0, minimum=0)
    if min_tokens > max_tokens:
        raise RequestError(
            400, f"'min_tokens' ({min_tokens}) must be <= '{field}' ({max_tokens}).",
            "min_tokens",
        )
    n = data.get("n")
    if n is not None and n != 1:
        raise RequestError(400, f"'n' must be 1 (the sim returns one choice), got {n!r}.", "n")
    stream_options = data.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise RequestError(
            400, f"'stream_options' must be an object or null, got {stream_options!r}.",
            "stream_options",
        )
    include_usage = _optional_bool(stream_options or {}, "include_usage", "stream_options.")
    continuous = _optional_bool(stream_options or {}, "continuous_usage_stats", "stream_options.")
    return GenerationRequest(
        chat=chat,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        ignore_eos=_optional_bool(data, "ignore_eos"),
        stream=_optional_bool(data, "stream"),
        include_usage=include_usage,
        continuous_usage=continuous,
    )


def _prompt_tokens(data: dict[str, Any]) -> int:
    """Tokens of ``prompt``: a string, a list of one string, or token ids (list of ints)."""
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one prompt
    if isinstance(prompt, str):
        return count_prompt_tokens(prompt)
    if isinstance(prompt, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in prompt
    ):
        return len(prompt)
    if prompt is None:
        raise RequestError(400, "'prompt' is required for /v1/completions.", "prompt")
    raise RequestError(
        400,
        "'prompt' must be a string, a list of one string, or a list of token ids; "
        f"got {_describe(prompt)}.",
        "prompt",
    )


def _chat_tokens(data: dict[str, Any]) -> int:
    messages = data.get("messages")
    if messages is None:
        raise RequestError(400, "'messages' is required for /v1/chat/completions.", "messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            400, f"'messages' must be a non-empty list of objects, got {_describe(messages)}.",
            "messages",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(
                400, f"'messages[{i}]' must be an object with a string 'role', "
                f"got {_describe(message)}.", "messages",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise RequestError(
                400, f"'messages[{i}].content' must be a string, a list of parts or null, "
                f"got {_describe(content)}.", "messages",
            )
    return count_chat_tokens(messages)


def _optional_int(data: dict[str, Any], field: str, default: int, *, minimum: int) -> int:
    value = data.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RequestError(
            400, f"'{field}' must be an integer >= {minimum}, got {value!r}.", field
        )
    return value


def _optional_bool(data: dict[str, Any], field: str, prefix: str = "") -> bool:
    value = data.get(field)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(
            400, f"'{prefix}{field}' must be true or false, got {value!r}.", prefix + field
        )
    return value


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{type(value).__name__} {text[:50]}..."
