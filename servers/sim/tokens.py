"""Deterministic output text: seeded word draws and early-stop draws for one request.

Request number ``n`` (its arrival order on the server, from 0) of a server seeded with ``s``
draws everything from ``numpy.random.default_rng([s, n])``, in this fixed order:

    fault_draw                 1 uniform in [0, 1)     (see servers.sim.faults)
    block 0: words[0:256]      256 ints in [0, len(VOCAB))
             eos[0:256]        256 uniforms in [0, 1)
    block 1: words[256:512] ...

Blocks are drawn lazily, always whole and in order, so the text depends only on (seed, n),
never on when or how far it is read. Each token is sent as " word" (leading space): the sim's
tokenizer (whitespace split) counts the generated text as exactly one token per token.
"""

from __future__ import annotations

import numpy as np
import orjson

VOCAB: tuple[str, ...] = (
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it",
    "as", "was", "with", "be", "by", "on", "not", "he", "this", "are",
    "or", "his", "from", "at", "which", "but", "have", "an", "had", "they",
    "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "time",
    "model", "token", "server", "latency", "batch", "request", "queue", "load",
    "system", "data", "user", "value", "result", "test",
)  # fmt: skip
"""64 common English words; every one is a single whitespace-free token."""

WORD_TEXT: tuple[str, ...] = tuple(" " + w for w in VOCAB)
"""The text of each token as sent: a leading space and the word."""

WORD_JSON: tuple[bytes, ...] = tuple(orjson.dumps(t) for t in WORD_TEXT)
"""Each token's text as a JSON string literal (quotes included), ready to splice into a chunk."""

BLOCK = 256
"""Tokens drawn per block."""


class TokenStream:
    """The seeded draws of one request: which word is token k, and its early-stop uniform."""

    __slots__ = ("_rng", "_words", "_eos", "fault_draw")

    def __init__(self, seed: int, request_number: int) -> None:
        self._rng = np.random.default_rng([seed, request_number])
        self.fault_draw: float = float(self._rng.random())
        self._words: list[int] = []
        self._eos: list[float] = []

    def _extend(self, k: int) -> None:
        while len(self._words) <= k:
            self._words += self._rng.integers(0, len(VOCAB), size=BLOCK).tolist()
            self._eos += self._rng.random(BLOCK).tolist()

    def word(self, k: int) -> int:
        """Index into VOCAB of token k (0-based)."""
        if k >= len(self._words):
            self._extend(k)
        return self._words[k]

    def eos_draw(self, k: int) -> float:
        """Uniform draw deciding whether the sequence may stop after token k (0-based)."""
        if k >= len(self._eos):
            self._extend(k)
        return self._eos[k]

    def text(self, n_tokens: int) -> str:
        """The first ``n_tokens`` tokens joined, as a non-streaming response returns them."""
        if n_tokens > len(self._words):
            self._extend(n_tokens - 1)
        return "".join([WORD_TEXT[i] for i in self._words[:n_tokens]])
