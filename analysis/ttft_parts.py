"""Where a request's time to first token goes, from the server's own per-request timings.

For every ok streamed request whose server reported timings (records' ``server_queue_s``,
``server_prefill_s``: the sim's ``sim_timings``, our PyTorch server's ``server_timings``,
llama-server's ``timings.prompt_ms``), TTFT measured from ``t_intended`` splits into

    ttft_intended   = t_first_token - t_intended
                    = generator_lag    t_sent - t_intended (pacer lateness + slot wait)
                    + server_queue     waiting for a batch slot, as the server measured it
                    + server_prefill   the prefill, as the server measured it
                    + transport_other  the rest: the request's and the first chunk's way
                                       through the network and HTTP stacks, the server's
                                       front end (parsing, tokenizing, scheduling slack) and
                                       the client's reading of the chunk

The last term is a remainder, so the four add up to TTFT exactly; it may be slightly
negative when the server's and the client's timestamps disagree by more than the network
time. A server that reports no queue time (llama-server) has its queueing inside
``transport_other``; ``queue_reported`` says for how many requests the queue was known.
Non-streamed requests are left out (their "TTFT" is the whole response).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from analysis.metrics import col

COMPONENTS = ("generator_lag", "server_queue", "server_prefill", "transport_other")
UNAVAILABLE = ("the server reported no per-request timings (the sim, llm-loadgen's PyTorch "
               "server and llama-server do, in their final usage chunk)")


def decompose(t_intended: np.ndarray, t_sent: np.ndarray, t_first_token: np.ndarray,
              queue_s: np.ndarray, prefill_s: np.ndarray) -> dict[str, np.ndarray]:
    """The split of the module docstring, elementwise; an unreported queue counts as 0 in
    the sum (so it ends up in transport_other) and stays NaN in ``server_queue``."""
    ti, tsn, tf = (np.asarray(x, float) for x in (t_intended, t_sent, t_first_token))
    q, p = np.asarray(queue_s, float), np.asarray(prefill_s, float)
    ttft = tf - ti
    lag = tsn - ti
    return {"ttft_intended": ttft, "generator_lag": lag, "server_queue": q,
            "server_prefill": p, "transport_other": ttft - lag - np.nan_to_num(q) - p}


def ttft_components(table: pa.Table) -> pa.Table:
    """Per request (ok, with a first token and a server-reported prefill): request_id,
    ttft_intended and the four components, in seconds."""
    status = table.column("status").to_numpy(zero_copy_only=False)
    if "server_prefill_s" not in table.column_names:
        sel = np.zeros(len(status), bool)
        prefill = queue = np.full(len(status), np.nan)
    else:
        prefill, queue = col(table, "server_prefill_s"), col(table, "server_queue_s")
        sel = (status == "ok") & np.isfinite(col(table, "t_first_token")) & np.isfinite(prefill)
    d = decompose(col(table, "t_intended")[sel], col(table, "t_sent")[sel],
                  col(table, "t_first_token")[sel], queue[sel], prefill[sel])
    rid = table.column("request_id").to_numpy(zero_copy_only=False)[sel]
    arrays = [pa.array(rid, pa.int64())] + [pa.array(d[k], pa.float64())
                                            for k in ("ttft_intended", *COMPONENTS)]
    return pa.Table.from_arrays(arrays, names=["request_id", "ttft_intended", *COMPONENTS])


def _ms(x: np.ndarray) -> dict[str, float | None]:
    x = x[np.isfinite(x)] * 1e3
    if not x.size:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def summarize_components(table: pa.Table, streamed: bool = True) -> dict[str, Any]:
    """summary.json's ``ttft_decomposition``: per component mean/p50/p90/p99 (ms) and its
    share of the mean TTFT (means add up, so the shares sum to 1); or why there is none."""
    n_ok = int((table.column("status").to_numpy(zero_copy_only=False) == "ok").sum())
    if not streamed:
        return {"available": False, "reason": "non-streamed requests: TTFT is the whole "
                "response, there is no first token to decompose", "n_requests": 0}
    c = ttft_components(table)
    n = c.num_rows
    if n == 0:
        return {"available": False, "reason": UNAVAILABLE, "n_requests": 0, "n_ok": n_ok}
    arrays = {k: c.column(k).to_numpy() for k in ("ttft_intended", *COMPONENTS)}
    q_known = int(np.isfinite(arrays["server_queue"]).sum())
    mean_ttft = float(np.mean(arrays["ttft_intended"]))
    parts = {}
    for k in COMPONENTS:
        v = np.nan_to_num(arrays[k]) if k == "server_queue" else arrays[k]
        parts[k] = {**_ms(arrays[k]),
                    "share_of_mean_ttft": float(np.mean(v)) / mean_ttft if mean_ttft else None}
    return {
        "available": True,
        "n_requests": n,
        "n_ok": n_ok,
        "queue_reported": q_known,
        "ttft_intended_ms": _ms(arrays["ttft_intended"]),
        "components_ms": parts,
        "note": None if q_known == n else (
            f"the server reported no queue time for {n - q_known} of {n} requests: their "
            "queueing is inside transport_other"),
    }
