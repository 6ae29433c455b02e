"""Do the token counts agree? Up to three sources per request, compared pairwise.

- ``expected``: the workload's count (``expected_input_tokens``): a local tokenizer, a
  dataset's count, or a whitespace-word estimate (the manifest's ``workload.token_count``
  or ``workload.prompts`` says which);
- ``usage``: the server's ``usage.prompt_tokens`` (``input_tokens`` where
  ``input_tokens_source == "usage"``);
- ``tokenize``: the server's tokenize endpoint before t0 (``input_tokens_tokenize``, with
  ``loadgen run --count-tokens-with-server``).

For each pair, over ok requests that have both: how many differ, their share, and the largest
relative difference |a - b| / max(b, 1) (b: the second source named). Any difference is
flagged: a prompt whose length is not what the workload meant changes the work measured
(a chat template, BOS tokens, a different tokenizer); the word estimate is expected to differ
on real tokenizers, so it is named.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

PAIRS = (("usage", "expected"), ("tokenize", "expected"), ("usage", "tokenize"))


def _values(table: pa.Table, ok: np.ndarray) -> dict[str, np.ndarray]:
    """Each source as float64 per ok request, NaN where absent."""
    def f(name: str) -> np.ndarray:
        if name not in table.column_names:
            return np.full(len(table), np.nan)
        return np.array([np.nan if v is None else float(v)
                         for v in table.column(name).to_pylist()], dtype=np.float64)

    usage = f("input_tokens")
    src = table.column("input_tokens_source").to_pylist()
    usage[np.array([s != "usage" for s in src], dtype=bool)] = np.nan
    return {"expected": f("expected_input_tokens")[ok], "usage": usage[ok],
            "tokenize": f("input_tokens_tokenize")[ok]}


def token_count_check(table: pa.Table, ok: np.ndarray, expected_source: str | None) -> dict:
    """The summary's ``token_counts`` section."""
    vals = _values(table, ok)
    ids = table.column("request_id").to_numpy()[ok]
    out: dict[str, Any] = {
        "sources": {k: int(np.isfinite(v).sum()) for k, v in vals.items()},
        "expected_source": expected_source,
        "pairs": {},
    }
    flagged = []
    for a, b in PAIRS:
        x, y = vals[a], vals[b]
        m = np.isfinite(x) & np.isfinite(y)
        if not m.any():
            continue
        d = np.abs(x[m] - y[m])
        rel = d / np.maximum(y[m], 1.0)
        mism = int((d > 0).sum())
        k = int(np.argmax(rel))
        out["pairs"][f"{a}_vs_{b}"] = {
            "n": int(m.sum()), "mismatched": mism, "share": mism / int(m.sum()),
            "max_rel_diff": float(rel[k]), "max_abs_diff": int(d.max()),
            "worst_request_id": int(ids[m][k]) if mism else None,
        }
        if mism:
            flagged.append(f"{a} vs {b}: {mism} of {int(m.sum())} differ (max "
                           f"{rel[k] * 100:.1f} %)")
    out["flagged"] = bool(flagged)
    out["mismatches"] = flagged
    return out
