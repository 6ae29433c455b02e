"""Synthetic prompts of an exact token length, for traces that carry only lengths.

Three ways to get a prompt of N tokens, recorded in the workload's description
(``prompt_tokens_from``):

``tokenizer`` -- a local Hugging Face ``tokenizers`` tokenizer (``tokenizer.json`` or a folder
    holding one). Method: draw N ids from a *pool* of word tokens (ids whose text is a
    space and letters, e.g. ``" water"``, and that re-encode to themselves alone), decode them
    to text, re-encode and fix up: more than N tokens -> cut the encoding to its first N ids
    and decode; fewer -> append decoded pool ids for the missing count; repeat until the
    count is N (at most ``max_rounds`` times). Guarantee: a returned prompt was re-encoded and
    has *exactly* N tokens with ``add_special_tokens=False`` (the server adds BOS etc. on
    top); a prompt that could not be made exact in ``max_rounds`` is kept with its nearest
    length and counted in ``not_exact`` (never silently). On byte-level BPE (GPT-2, Llama-3,
    Qwen) the first round is exact almost always, since word tokens with a leading space do
    not merge across words.
``server`` -- the server's ``POST /tokenize`` (vLLM: ``{"model", "prompt"}`` -> ``{"count",
    "tokens"}``; llama-server: ``{"content"}`` -> ``{"tokens"}``; both keys are sent).
    Method: start from N common words, count them on the server, then add or drop words by
    the difference, and count again, until exact (at most ``max_rounds`` rounds). If the
    server does not answer, prompts fall back to ``words`` and the reason is recorded.
``words`` -- N common words (:func:`arrivals.prompts.word_prompts`), ~1 token per word on real
    tokenizers and exact on the reference simulator.

Prefix sharing (:func:`hash_id_prompts`): Mooncake traces give each request a list of
``hash_ids``, one per 512-token block, equal ids meaning an equal prefix block. Each hash id
is mapped to one fixed block of text (seeded by the id), and a prompt is the concatenation
of its blocks, the last one cut to the remaining length; so requests that share leading ids
share a textual (and token) prefix.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from arrivals.prompts import VOCABULARY, word_prompts

PROMPT_SOURCES = ("tokenizer", "server", "words")
_WORD = re.compile(r"^ [A-Za-z]{2,}$")
_WORD_LOOSE = re.compile(r"^ ?[A-Za-z]+$")


class TokenizerError(ValueError):
    """A tokenizer could not be loaded or used; the message names the path or URL."""


class LocalTokenizer:
    """A ``tokenizers.Tokenizer`` counting tokens without special tokens."""

    def __init__(self, tok: Any, source: str):
        self.tok, self.source = tok, source
        self._pool: np.ndarray | None = None

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def word_pool(self, max_scan: int = 50_000) -> np.ndarray:
        """Ids of word tokens (a space and letters) that re-encode to themselves alone."""
        if self._pool is None:
            size = self.tok.get_vocab_size(with_added_tokens=False)
            ids = list(range(min(size, max_scan)))
            texts = [self.tok.decode([i]) for i in ids]
            for pattern in (_WORD, _WORD_LOOSE):
                cand = [(i, s) for i, s in zip(ids, texts, strict=True) if pattern.match(s)]
                enc = self.tok.encode_batch([s for _, s in cand], add_special_tokens=False)
                pool = [i for (i, _), e in zip(cand, enc, strict=True) if e.ids == [i]]
                if len(pool) >= 16:
                    break
            if not pool:
                raise TokenizerError(f"{self.source}: no word token re-encodes to itself; "
                                     "cannot build exact-length prompts with this tokenizer")
            self._pool = np.asarray(pool, dtype=np.int64)
        return self._pool


def load_tokenizer(path_or_name: str | Path) -> LocalTokenizer:
    """A tokenizer from ``tokenizer.json``, a folder holding one, or a cached hub name."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TokenizerError(f"{path_or_name}: the 'tokenizers' package is not installed; "
                             "pip install tokenizers") from None
    p = Path(path_or_name)
    if p.is_dir():
        p = p / "tokenizer.json"
        if not p.is_file():
            raise TokenizerError(f"{path_or_name}: folder has no tokenizer.json")
    try:
        if p.is_file():
            return LocalTokenizer(Tokenizer.from_file(str(p)), str(p))
        return LocalTokenizer(Tokenizer.from_pretrained(str(path_or_name)), str(path_or_name))
    except Exception as e:  # tokenizers raises plain Exception subclasses
        raise TokenizerError(f"{path_or_name}: could not load a tokenizer ({e}); pass a "
                             "tokenizer.json file or a folder that holds one") from None


def exact_token_prompt(tok: LocalTokenizer, n: int, rng: np.random.Generator,
                       max_rounds: int = 16) -> tuple[str, int]:
    """A prompt of ``n`` tokens (see the module docstring) and its re-encoded length."""
    if n < 1:
        raise ValueError(f"prompt length must be >= 1 token, got {n}")
    pool = tok.word_pool()
    text = tok.decode(rng.choice(pool, n))
    m = tok.count(text)
    for _ in range(max_rounds):
        if m == n:
            break
        if m > n:
            text = tok.decode(tok.encode(text)[:n])
        else:
            text = text + tok.decode(rng.choice(pool, n - m))
        m = tok.count(text)
    return text, m


def tokenizer_prompts(lengths: np.ndarray, tok: LocalTokenizer, seed: int = 0,
                      ) -> tuple[list[str], dict[str, Any]]:
    """Exact-length prompts for each length, and a record of how exact they are."""
    rng = np.random.default_rng(seed)
    out, bad = [], 0
    for n in np.asarray(lengths, dtype=np.int64).tolist():
        text, m = exact_token_prompt(tok, n, rng)
        out.append(text)
        bad += m != n
    return out, {"prompt_tokens_from": "tokenizer", "tokenizer": tok.source,
                 "not_exact": int(bad)}


# ---- the server's /tokenize --------------------------------------------------------------

def _run_sync(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_fn())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(coro_fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["e"] = e

    th = threading.Thread(target=target)
    th.start()
    th.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


class ServerTokenizer:
    """Counts tokens with a server's ``POST {base_url}/tokenize`` (vLLM or llama-server)."""

    def __init__(self, base_url: str, model: str | None = None, *, concurrency: int = 32,
                 timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.model, self.concurrency, self.timeout_s = model, concurrency, timeout_s

    @property
    def url(self) -> str:
        return f"{self.base_url}/tokenize"

    async def _count_all(self, texts: Sequence[str]) -> list[int]:
        import aiohttp

        sem = asyncio.Semaphore(self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async def one(text: str) -> int:
                body: dict[str, Any] = {"prompt": text, "content": text,
                                        "add_special_tokens": False}
                if self.model:
                    body["model"] = self.model
                async with sem, session.post(self.url, json=body) as r:
                    if r.status != 200:
                        raise TokenizerError(f"{self.url}: HTTP {r.status}: "
                                             f"{(await r.text())[:200]}")
                    js = await r.json(content_type=None)
                if isinstance(js, dict) and isinstance(js.get("count"), int):
                    return js["count"]
                if isinstance(js, dict) and isinstance(js.get("tokens"), list):
                    return len(js["tokens"])
                raise TokenizerError(f"{self.url}: expected a JSON object with 'count' or "
                                     f"'tokens', got {str(js)[:200]}")
            return list(await asyncio.gather(*(one(t) for t in texts)))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts``; raises TokenizerError if the server does not answer."""
        import aiohttp

        try:
            return _run_sync(lambda: self._count_all(texts))
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise TokenizerError(f"{self.url}: tokenize endpoint not reachable "
                                 f"({type(e).__name__}: {e})") from None

    def count(self, text: str) -> int:
        return self.count_many([text])[0]


def server_prompts(lengths: np.ndarray, server: ServerTokenizer, seed: int = 0,
                   max_rounds: int = 8) -> tuple[list[str], dict[str, Any]]:
    """Word prompts adjusted with the server's counts until each has its length exactly."""
    rng = np.random.default_rng(seed)
    want = np.asarray(lengths, dtype=np.int64).tolist()
    vocab = np.array(VOCABULARY, dtype=object)
    words = [list(vocab[rng.integers(0, len(vocab), n)]) for n in want]
    todo = list(range(len(want)))
    rounds = 0
    counts = [0] * len(want)
    while todo and rounds < max_rounds:
        got = server.count_many([" ".join(words[i]) for i in todo])
        rounds += 1
        nxt = []
        for i, m in zip(todo, got, strict=True):
            counts[i] = m
            d = want[i] - m
            if d > 0:
                words[i].extend(vocab[rng.integers(0, len(vocab), d)])
            elif d < 0:
                del words[i][max(1, len(words[i]) + d):]
            if d:
                nxt.append(i)
        todo = nxt
    return [" ".join(w) for w in words], {"prompt_tokens_from": "server", "tokenize_url":
                                          server.url, "rounds": rounds, "not_exact": len(todo)}


def prompts_for_lengths(
    lengths: np.ndarray,
    source: str = "words",
    *,
    tokenizer: LocalTokenizer | None = None,
    server: ServerTokenizer | None = None,
    seed: int = 0,
) -> tuple[list[str], dict[str, Any]]:
    """Prompts of the given token lengths from ``source`` (PROMPT_SOURCES), and a record.

    ``server`` falls back to ``words`` when the endpoint does not answer; the record then
    says ``prompt_tokens_from: words`` and gives the reason under ``fallback_reason``.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if source == "tokenizer":
        if tokenizer is None:
            raise TokenizerError("--prompt-tokens-from tokenizer needs --tokenizer PATH")
        return tokenizer_prompts(lengths, tokenizer, seed)
    if source == "server":
        if server is None:
            raise TokenizerError("--prompt-tokens-from server needs a server URL")
        try:
            return server_prompts(lengths, server, seed)
        except TokenizerError as e:
            prompts = word_prompts(lengths, np.random.default_rng(seed))
            return prompts, {"prompt_tokens_from": "words", "requested": "server",
                             "fallback_reason": str(e),
                             "note": "common words, ~1 token each (exact on the sim)"}
    if source == "words":
        return word_prompts(lengths, np.random.default_rng(seed)), {
            "prompt_tokens_from": "words", "note": "common words, ~1 token each (exact on the sim)"}
    raise ValueError(f"unknown prompt source {source!r}; expected one of "
                     f"{', '.join(PROMPT_SOURCES)}")


# ---- prefix sharing from Mooncake hash_ids ----------------------------------------------

def hash_id_prompts(
    hash_ids: Sequence[Sequence[int]],
    lengths: np.ndarray,
    *,
    block_tokens: int = 512,
    tokenizer: LocalTokenizer | None = None,
    seed: int = 0,
) -> tuple[list[str], dict[str, Any]]:
    """Prompts whose equal leading hash ids give equal leading text blocks.

    Block ``h`` is a fixed text of ``block_tokens`` tokens drawn with seed (seed, h): exact
    tokens with ``tokenizer``, else common words. A request of L tokens takes its blocks in
    order and cuts the last one to what is left of L (in tokens, or words); if its ids cover
    fewer than L tokens, the rest is random text of its own. Requests sharing the first k ids
    share the first k blocks' text.
    """
    blocks: dict[int, list[Any]] = {}  # id -> units (token ids, or words)
    vocab = np.array(VOCABULARY, dtype=object)

    def units(n: int, key: Sequence[int]) -> list[Any]:
        rng = np.random.default_rng([seed, *key])
        if tokenizer is not None:
            return tokenizer.encode(exact_token_prompt(tokenizer, n, rng)[0])[:n]
        return list(vocab[rng.integers(0, len(vocab), n)])

    out: list[str] = []
    shared = 0
    for r, (ids, n) in enumerate(zip(hash_ids, np.asarray(lengths).tolist(), strict=True)):
        parts: list[Any] = []
        for h in ids:
            if len(parts) >= n:
                break
            h = int(h)
            if h not in blocks:
                blocks[h] = units(block_tokens, (1, h))
            else:
                shared += 1
            parts.extend(blocks[h][: n - len(parts)])
        if len(parts) < n:
            parts.extend(units(n - len(parts), (2, r)))
        out.append(tokenizer.decode(parts) if tokenizer is not None else " ".join(parts))
    info = {"prefix_blocks": "hash_ids", "block_tokens": block_tokens,
            "distinct_blocks": len(blocks), "reused_blocks": shared,
            "prompt_tokens_from": "tokenizer" if tokenizer is not None else "words"}
    if tokenizer is not None:
        info["not_exact"] = int(sum(tokenizer.count(p) != n for p, n in
                                    zip(out, np.asarray(lengths).tolist(), strict=True)))
    return out, info
