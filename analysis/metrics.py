"""Derived per-request metrics, computed from the records (never stored twice).

Definitions (times in seconds; "origin" is t_sent for the service's view or t_intended for the
user's view, which includes any lag of the generator and, in closed-loop mode, slot waiting):
  ttft = t_first_token - origin
  e2e  = t_done - origin
  tpot = (t_done - t_first_token) / (output_tokens - 1)        requests with > 1 output token
  itl  = successive differences of chunk_times (per streamed chunk, as vllm bench serve)
  itl_token = per-token inter-token latency: a chunk of k tokens after a gap g gives k values
         g / k (analysis/tokens.py: counts from the server, else an estimate, flagged)
  send_lag  = t_sent - t_intended - slot_wait                    the generator's own lateness
  queueing  = t_sent - t_intended                                 lag plus slot wait
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def col(table: pa.Table, name: str, dtype=np.float64) -> np.ndarray:
    a = table.column(name)
    if dtype is np.float64:
        return a.to_numpy(zero_copy_only=False).astype(np.float64)
    return np.asarray(a.fill_null(0).to_numpy(zero_copy_only=False), dtype=dtype)


@dataclass(frozen=True)
class Derived:
    ok: np.ndarray  # bool mask of successful requests
    sent: np.ndarray  # bool mask of requests that were sent
    ttft_sent: np.ndarray  # over ok requests
    ttft_intended: np.ndarray
    e2e_sent: np.ndarray
    e2e_intended: np.ndarray
    tpot: np.ndarray  # over ok requests with > 1 output token
    itl: np.ndarray  # all inter-chunk intervals of ok requests
    itl_token: np.ndarray  # per-token intervals of ok requests (analysis/tokens.py)
    token_basis: dict  # how many ok requests had each tokens-per-chunk basis (tokens.BASES)
    send_lag: np.ndarray  # over sent requests
    slot_wait: np.ndarray  # over sent requests
    input_tokens: np.ndarray  # over ok requests (0 where unknown)
    output_tokens: np.ndarray  # over ok requests (0 where unknown)


def derive(table: pa.Table) -> Derived:
    status = table.column("status").to_numpy(zero_copy_only=False)
    ok = status == "ok"
    t_int = col(table, "t_intended")
    t_sent = col(table, "t_sent")
    t_ft = col(table, "t_first_token")
    t_done = col(table, "t_done")
    slot = col(table, "slot_wait")
    sent = np.isfinite(t_sent)
    out_tok = col(table, "output_tokens", np.int64)
    in_tok = col(table, "input_tokens", np.int64)
    tpot_mask = ok & (out_tok > 1)
    tpot = (t_done[tpot_mask] - t_ft[tpot_mask]) / (out_tok[tpot_mask] - 1)
    ok_table = table.filter(pa.array(ok))
    chunks = ok_table.column("chunk_times")
    itl = _itl(chunks)
    itl_token, basis = _itl_token(ok_table, itl, out_tok[ok])
    return Derived(
        ok=ok,
        sent=sent,
        ttft_sent=(t_ft - t_sent)[ok],
        ttft_intended=(t_ft - t_int)[ok],
        e2e_sent=(t_done - t_sent)[ok],
        e2e_intended=(t_done - t_int)[ok],
        tpot=tpot,
        itl=itl,
        itl_token=itl_token,
        token_basis=basis,
        send_lag=(t_sent - t_int - np.nan_to_num(slot))[sent],
        slot_wait=np.nan_to_num(slot)[sent],
        input_tokens=in_tok[ok],
        output_tokens=out_tok[ok],
    )


def _itl(chunks: pa.ChunkedArray) -> np.ndarray:
    """Inter-chunk intervals of every request, concatenated (vectorised over the list column)."""
    if chunks.null_count == len(chunks):
        return np.empty(0)
    parts = []
    for arr in chunks.chunks:
        arr = arr.filter(pc.invert(pc.is_null(arr))) if arr.null_count else arr
        if len(arr) == 0:
            continue
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        offs = arr.offsets.to_numpy()
        offs = offs - offs[0]
        d = np.diff(flat)
        # drop the differences that span two requests: those at each list's last position
        keep = np.ones(len(d), dtype=bool)
        ends = offs[1:-1] - 1
        keep[ends[(ends >= 0) & (ends < len(d))]] = False
        parts.append(d[keep])
    return np.concatenate(parts) if parts else np.empty(0)


def _itl_token(ok_table: pa.Table, itl: np.ndarray, out_tok: np.ndarray) -> tuple[np.ndarray, dict]:
    """Per-token ITL of the ok requests; the per-chunk ``itl`` when every chunk is one token
    (the common case: no per-request work)."""
    from analysis.tokens import basis_report, chunk_counts, list_column, per_token_itl

    if "n_chunks" in ok_table.column_names:
        n_chunks = col(ok_table, "n_chunks", np.int64)
    else:  # a hand-made or older table: count the chunk times
        n_chunks = np.asarray(pc.list_value_length(ok_table.column("chunk_times")).fill_null(0)
                              .to_numpy(zero_copy_only=False), dtype=np.int64)
    has_counts = ("chunk_tokens" in ok_table.column_names
                  and ok_table.column("chunk_tokens").null_count < ok_table.num_rows)
    if not has_counts and not (out_tok > n_chunks).any():
        return itl, basis_report({"one_per_chunk": ok_table.num_rows})
    chunks = list_column(ok_table, "chunk_times")
    reported = list_column(ok_table, "chunk_tokens", np.int64)
    parts, bases = [], {"server": 0, "estimated": 0, "one_per_chunk": 0}
    for c, r, o in zip(chunks, reported, out_tok.tolist(), strict=True):
        if c is None:
            bases["one_per_chunk"] += 1
            continue
        k, basis = chunk_counts(len(c), o, r)
        bases[basis] += 1
        parts.append(per_token_itl(c, k))
    return (np.concatenate(parts) if parts else np.empty(0)), basis_report(bases)
