"""The simulated engine's performance model: pure functions, no I/O.

The sim is a continuous-batching engine (like vLLM). Time advances in *iterations*; in each
iteration every running sequence produces exactly one token, and the sequences admitted at the
start of the iteration are prefilled in it (their first token comes out at its end). The
duration of one iteration is linear in the work it does:

    step_time(B, P) = step_base + step_per_seq * B + prefill_per_token * P

    B = sequences running in the iteration (after admission), 1 <= B <= max_batch
    P = prompt tokens of the sequences admitted (prefilled) in this iteration

Tokens are whitespace-separated words (see ``count_prompt_tokens``), so a client can predict
token counts exactly without a tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class SimCosts:
    """Costs of one engine iteration, all in seconds (see the module docstring)."""

    step_base: float = 0.006
    """Fixed cost of one iteration (weights read, kernel launches)."""
    step_per_seq: float = 0.00025
    """Added per sequence running in the iteration (KV-cache reads grow with the batch)."""
    prefill_per_token: float = 0.00002
    """Added per prompt token prefilled in the iteration."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"SimCosts.{f.name} must be a number of seconds, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"SimCosts.{f.name} must be a finite number of seconds >= 0, got {value!r}"
                )

    def as_dict(self) -> dict[str, float]:
        """The costs as a plain dict (seconds), for /version and run manifests."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def step_time(costs: SimCosts, batch_size: int, prefill_tokens: int) -> float:
    """Duration in seconds of one iteration running ``batch_size`` sequences.

        dt = step_base + step_per_seq * batch_size + prefill_per_token * prefill_tokens

    ``prefill_tokens`` is the number of prompt tokens of the sequences admitted in this
    iteration (0 for a pure decode step).
    """
    return (
        costs.step_base
        + costs.step_per_seq * batch_size
        + costs.prefill_per_token * prefill_tokens
    )


def predict_isolated(costs: SimCosts, input_tokens: int, output_tokens: int) -> dict[str, float]:
    """Latencies of one request alone on an idle server (no queueing, batch of 1).

        ttft = step_time(1, input_tokens)          prefill iteration emits token 1
        itl  = step_time(1, 0)                     each later token is one decode step
        e2e  = ttft + (output_tokens - 1) * itl

    Returns ``{"ttft": s, "itl": s, "e2e": s}`` in seconds. Network and HTTP overheads are not
    included; on loopback they add a few hundred microseconds.
    """
    if isinstance(input_tokens, bool) or not isinstance(input_tokens, int) or input_tokens < 0:
        raise ValueError(f"input_tokens must be an int >= 0, got {input_tokens!r}")
    if isinstance(output_tokens, bool) or not isinstance(output_tokens, int) or output_tokens < 1:
        raise ValueError(f"output_tokens must be an int >= 1, got {output_tokens!r}")
    ttft = step_time(costs, 1, input_tokens)
    itl = step_time(costs, 1, 0)
    return {"ttft": ttft, "itl": itl, "e2e": ttft + (output_tokens - 1) * itl}


def count_prompt_tokens(text: str) -> int:
    """The sim's tokenizer: one token per whitespace-separated word, ``len(text.split())``."""
    return len(text.split())


def count_chat_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat request: the sum of ``count_prompt_tokens`` over the contents.

    No chat-template tokens are added. ``content`` may be a string, ``None`` or a list of
    OpenAI content parts, of which only ``{"type": "text", "text": ...}`` parts count.
    """
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    total += len(part["text"].split())
    return total
