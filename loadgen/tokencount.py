"""The third token count: the server's own tokenize endpoint, asked before t0.

Records can carry a request's prompt length from three sources: the workload's expected
count (``expected_input_tokens``: the dataset's tokenizer or word estimate), the server's
``usage.prompt_tokens`` (``input_tokens``), and, with ``loadgen run
--count-tokens-with-server``, ``POST {base_url}/tokenize`` (``input_tokens_tokenize``).
The summary compares them (analysis/tokencheck.py).

Each distinct prompt is counted once, before t0, so the run itself is not disturbed. Bodies
follow what the server will count: completions send ``prompt`` (vLLM) and ``content``
(llama-server) with special tokens added (``add_special_tokens`` / ``add_special``: BOS is
part of ``usage.prompt_tokens``); chat sends ``messages`` with ``add_generation_prompt``
(vLLM applies the chat template; llama-server's /tokenize has no chat form, so chat counts
from it will be flagged as mismatches).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from arrivals.workload import Workload
from loadgen.clients.openai import ClientConfig
from loadgen.preflight import PreflightError


class TokenizeError(PreflightError):
    """The tokenize endpoint did not answer usefully (before t0); the message names the URL."""


def _bodies(cfg: ClientConfig, wl: Workload) -> tuple[list[bytes], list[int]]:
    """Distinct tokenize bodies and, per request, the index of its body."""
    model = cfg.served_model_name or cfg.model
    msgs = wl.sessions.messages if wl.sessions is not None else None
    keys: dict[bytes, int] = {}
    which: list[int] = []
    for i, p in enumerate(wl.prompts):
        if cfg.chat:
            m = msgs[i] if msgs is not None else [{"role": "user", "content": p}]
            body = {"model": model, "messages": m, "add_generation_prompt": True}
        else:
            body = {"model": model, "prompt": p, "content": p, "add_special_tokens": True,
                    "add_special": True}
        b = orjson.dumps(body)
        which.append(keys.setdefault(b, len(keys)))
    return list(keys), which


async def _count(url: str, headers: dict[str, str], bodies: list[bytes], concurrency: int,
                 timeout_s: float) -> list[int]:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
        async def one(b: bytes) -> int:
            async with sem, s.post(url, data=b, headers=headers) as r:
                data = await r.read()
                if r.status != 200:
                    raise TokenizeError(f"{url}: HTTP {r.status}: "
                                        f"{data[:200].decode('utf-8', 'replace')}")
            try:
                js = orjson.loads(data)
            except orjson.JSONDecodeError:
                js = None
            if isinstance(js, dict) and isinstance(js.get("count"), int):
                return js["count"]
            if isinstance(js, dict) and isinstance(js.get("tokens"), list):
                return len(js["tokens"])
            raise TokenizeError(f"{url}: expected a JSON object with 'count' or 'tokens', got "
                                f"{data[:200]!r}")

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def server_token_counts(cfg: ClientConfig, wl: Workload, *, concurrency: int = 16,
                        timeout_s: float = 60.0) -> tuple[list[int], dict[str, Any]]:
    """Per request, the prompt tokens the server's /tokenize counts; and what was done.

    Raises TokenizeError (naming the URL and what to do) if the endpoint does not answer.
    """
    import uvloop

    url = cfg.base_url.rstrip("/") + "/tokenize"
    bodies, which = _bodies(cfg, wl)
    try:
        counts = uvloop.run(_count(url, cfg.request_headers(), bodies, concurrency, timeout_s))
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise TokenizeError(f"{url}: tokenize endpoint not reachable ({type(e).__name__}: {e}); "
                            "run without --count-tokens-with-server") from None
    except TokenizeError as e:
        raise TokenizeError(f"{e}; this server may have no /tokenize: run without "
                            "--count-tokens-with-server") from None
    return [counts[j] for j in which], {"tokenize_url": url, "distinct_prompts": len(bodies),
                                         "style": "chat messages" if cfg.chat else
                                         "prompt with special tokens"}
