"""A Workload replaying a Trace: the trace's times, its lengths, synthetic prompts.

Prompts are :func:`arrivals.prompts.word_prompts` of the trace's input lengths: N common
words, which is exactly N tokens on the reference simulator and about N on a real tokenizer
(exact-tokenizer prompts are a later piece of the arrivals work). ``output_tokens`` (sent as
max_tokens) is the trace's output length.

Failed requests (``ok == False``: BurstGPT's 0-token rows) are dropped by default and their
count is recorded in the description (``failed_dropped``); with ``drop_failed=False`` they
are kept and their lengths clipped to >= 1 token (``clipped`` counts requests whose input or
output length was raised to 1), since a request for 0 tokens cannot be sent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from arrivals.prompts import word_prompts
from arrivals.traces.trace import Trace
from arrivals.workload import Workload


def trace_workload(
    trace: Trace,
    *,
    seed: int = 0,
    drop_failed: bool = True,
    max_requests: int | None = None,
) -> Workload:
    """The trace's requests (the first ``max_requests`` if given) as a Workload."""
    failed = ~trace.ok
    n_failed = int(failed.sum())
    tr = trace.take(~failed) if drop_failed and n_failed else trace
    if len(tr) == 0:
        raise ValueError(f"{trace.source}: no successful request left to replay")
    if max_requests is not None:
        tr = tr.take(np.arange(min(max_requests, len(tr))))
    inp = np.maximum(tr.input_tokens, 1)
    out = np.maximum(tr.output_tokens, 1)
    clipped = int(((tr.input_tokens < 1) | (tr.output_tokens < 1)).sum())
    t = tr.t - tr.t[0]  # the first replayed request is sent at t0
    prompts = word_prompts(inp, np.random.default_rng(seed))
    name = trace.source.rsplit("/", 1)[-1]
    desc: dict[str, Any] = {
        "kind": "trace",
        "trace": trace.describe(),
        "request_rate": float((len(t) - 1) / t[-1]) if len(t) > 1 and t[-1] > 0 else None,
        "seed": seed,
        "failed_in_trace": n_failed,
        "failed_dropped": n_failed if drop_failed else 0,
        "clipped_to_one_token": clipped,
        "max_requests": max_requests,
        "prompt_text": "random common English words, one per input token of the trace "
                       "(exact on the sim, approximate on real tokenizers)",
    }
    return Workload(
        t_intended=t,
        prompts=prompts,
        input_tokens=inp,
        output_tokens=out,
        dataset=f"trace:{trace.format}",
        item_ids=[f"{name}:{r}" for r in tr.row.tolist()],
        description=desc,
    )
