"""Tokens per streamed chunk, and inter-token latency per token rather than per chunk.

A streamed chunk (SSE event with text) may carry several tokens: speculative decoding, a
server's stream interval (vLLM ``--stream-interval``), llama-server holding back bytes of an
incomplete UTF-8 character. Per-chunk intervals (``itl``, as vllm bench serve reports) then
overstate the time per token. Per request, the tokens k_i of chunk i come from:

    basis "server"         the server's own count (records' ``chunk_tokens``: continuous usage
                           stats, llama.cpp per-token timings, logprobs), used as is;
    basis "estimated"      output_tokens > n_chunks and no per-chunk count: the first chunk is
                           given 1 token and the remaining output_tokens - 1 are spread as
                           evenly as integers allow over the later chunks (the remainder one
                           each, evenly spaced). An estimate: flagged in every result;
    basis "one_per_chunk"  output_tokens <= n_chunks (or unknown): one token per chunk.

Per-token ITL: chunk i >= 1 arrives g_i after chunk i-1 and brings k_i tokens, so it adds k_i
values g_i / k_i (the mean interval of its tokens). Their sum is the decode time
t_last - t_first, and there are (tokens after the first chunk) of them, so the mean per-token
ITL equals the per-token decode rate; k_i = 1 everywhere gives back the per-chunk intervals.
The tokens of chunk 0 arrive with the first token (TTFT) and add no interval.

Token arrival times (for smoothness): every token of a chunk arrives with its chunk,
``token_times = repeat(chunk_times, k)``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

BASES = ("server", "estimated", "one_per_chunk")


def list_column(table: pa.Table, name: str, dtype=np.float64) -> list[np.ndarray | None]:
    """Each row's list in column ``name`` as a numpy array (None where null or no column)."""
    if name not in table.column_names:
        return [None] * table.num_rows
    out: list[np.ndarray | None] = []
    for arr in table.column(name).chunks:
        flat = arr.flatten().to_numpy(zero_copy_only=False).astype(dtype)
        offs = arr.offsets.to_numpy()
        base = offs[0]
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        for k in range(len(arr)):
            out.append(flat[offs[k] - base: offs[k + 1] - base] if valid[k] else None)
    return out


def apportion(n_chunks: int, output_tokens: int) -> np.ndarray:
    """The estimate of the module docstring: 1 token in chunk 0, the rest spread evenly."""
    if n_chunks < 1:
        return np.empty(0, dtype=np.int64)
    if n_chunks == 1:
        return np.array([max(int(output_tokens), 1)], dtype=np.int64)
    later = n_chunks - 1
    extra = int(output_tokens) - n_chunks  # tokens beyond one per chunk
    base, rem = divmod(extra, later)
    # rem chunks get one more: floor((j+1) rem / later) - floor(j rem / later) is 1 for exactly
    # rem evenly spaced j in 0..later-1
    j = np.arange(later + 1)
    bump = np.diff((j * rem) // later)
    return np.concatenate([[1], 1 + base + bump]).astype(np.int64)


def chunk_counts(n_chunks: int, output_tokens: int,
                 reported: np.ndarray | None) -> tuple[np.ndarray, str]:
    """(tokens of each chunk, basis) for one request (see the module docstring)."""
    if reported is not None and len(reported) == n_chunks and n_chunks and reported.min() >= 1:
        return reported.astype(np.int64), "server"
    if n_chunks >= 1 and output_tokens > n_chunks:
        return apportion(n_chunks, output_tokens), "estimated"
    return np.ones(n_chunks, dtype=np.int64), "one_per_chunk"


def per_token_itl(chunk_times: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """k_i copies of g_i / k_i for every chunk i >= 1 (module docstring)."""
    c = np.asarray(chunk_times, dtype=np.float64)
    if c.size < 2:
        return np.empty(0)
    k = np.asarray(counts[1:], dtype=np.int64)
    return np.repeat(np.diff(c) / k, k)


def token_times(chunk_times: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The arrival time of every token: each token of a chunk arrives with it."""
    return np.repeat(np.asarray(chunk_times, dtype=np.float64), np.asarray(counts, np.int64))


def request_counts(chunks: list[np.ndarray], reported: list[np.ndarray | None],
                   output_tokens: np.ndarray) -> tuple[list[np.ndarray], Counter]:
    """``chunk_counts`` of many requests, and how many had each basis."""
    counts, bases = [], Counter({b: 0 for b in BASES})
    for c, r, o in zip(chunks, reported, output_tokens.tolist(), strict=True):
        k, basis = chunk_counts(len(c), int(o), r)
        counts.append(k)
        bases[basis] += 1
    return counts, bases


def basis_report(bases: Counter) -> dict:
    """Counts per basis, and a note when any count is an estimate."""
    n = sum(bases.values())
    out = {b: int(bases.get(b, 0)) for b in BASES}
    out["estimated_share"] = out["estimated"] / n if n else None
    out["note"] = (
        f"{out['estimated']} of {n} requests had more output tokens than chunks and no "
        "per-chunk count from the server: their tokens per chunk are ESTIMATED (first chunk 1, "
        "the rest spread evenly); --continuous-usage-stats (vLLM, sim) or llama-server's "
        "timings_per_token gives exact counts" if out["estimated"] else None)
    return out
