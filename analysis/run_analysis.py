"""Per-run statistics: the latency a user sees, conditioned on request size (docs/analysis.md).

``analyze(run)`` returns a JSON-safe dict with exactly these top-level keys:
``window`` (which requests count), ``percentiles_ci`` (percentiles with distribution-free
95 % intervals), ``length_buckets`` (percentiles per log2 input x output bucket), ``fits``
(median-regression latency models with bootstrap CIs), ``slo`` (attainment and goodput, or
None), ``smoothness`` (fluidity index and stall ratio, over tokens) and ``tokens_per_chunk``
(where the tokens of each chunk came from: the server, an estimate, or one per chunk; see
analysis/tokens.py). ``percentiles_ci`` has ``itl`` per chunk and ``itl_per_token``.

Every statistic is over the successful requests whose ``t_intended`` lies in the window
(failed ones count only as SLO misses). TTFT, E2E, TPOT and ITL are measured from ``t_sent``
(the service's view; the fits estimate the service's own costs), and TTFT/E2E also from
``t_intended`` (what a user sees) under ``ttft_intended``/``e2e_intended``; SLOs are judged
from ``t_intended``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from analysis.ci import percentile_ci
from analysis.fit import fit_e2e, fit_ttft
from analysis.jsonsafe import plain
from analysis.length import length_buckets
from analysis.load import Run
from analysis.metrics import col
from analysis.slo import SLO, evaluate_slo, parse_slo, slo_report
from analysis.smoothness import smoothness
from analysis.tokens import basis_report, list_column, per_token_itl, request_counts
from analysis.window import Window, choose_window

TOP_LEVEL_KEYS = ("window", "percentiles_ci", "length_buckets", "fits", "slo", "smoothness",
                  "tokens_per_chunk")
CI_PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
CONFIDENCE = 0.95
# Without an SLO on TPOT/ITL, a reader expects the run's own typical cadence with this margin.
DEFAULT_TPOT_MARGIN = 1.5


def chunk_lists(table: pa.Table) -> list[np.ndarray]:
    """Each row's ``chunk_times`` as a float64 array (empty where null)."""
    return [c if c is not None else np.empty(0) for c in list_column(table, "chunk_times")]


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _ci_block(seconds: np.ndarray) -> dict:
    res = {}
    for key, p in CI_PERCENTILES.items():
        c = percentile_ci(seconds, p, CONFIDENCE)
        res[key] = {"value_ms": _num(c.value * 1e3), "lo_ms": _num(c.lo * 1e3),
                    "hi_ms": _num(c.hi * 1e3), "n": c.n}
    return res


def _fit_dict(fit) -> dict:
    d = fit.as_dict()
    for k, v in list(d.items()):
        if isinstance(v, float):
            d[k] = _num(v)
    d["ci95"] = {k: [_num(a), _num(b)] for k, (a, b) in d["ci95"].items()}
    return d


def analyze(run: Run, *, slo: SLO | str | None = None,
            window: Window | tuple | str | None = None, n_boot: int = 200,
            target_tpot_ms: float | None = None, seed: int = 0) -> dict[str, Any]:
    """The per-run statistics (module docstring); ``window=None`` detects the steady window,
    ``"all"`` keeps every request, ``"START:END"`` or ``(start, end)`` sets it."""
    if isinstance(slo, str):
        slo = parse_slo(slo)
    t = run.requests
    w = choose_window(t, window)
    status = t.column("status").to_numpy(zero_copy_only=False)
    t_int, t_sent = col(t, "t_intended"), col(t, "t_sent")
    t_ft, t_done = col(t, "t_first_token"), col(t, "t_done")
    inp = col(t, "input_tokens", np.int64)
    out = col(t, "output_tokens", np.int64)
    chunks = chunk_lists(t)
    in_w = w.mask(t_int)
    sel = in_w & (status == "ok")
    idx = np.nonzero(sel)[0]

    ttft_s, e2e_s = (t_ft - t_sent)[sel], (t_done - t_sent)[sel]
    ttft_i, e2e_i = (t_ft - t_int)[sel], (t_done - t_int)[sel]
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot_all = np.where(out > 1, (t_done - t_ft) / (out - 1), np.nan)
    tpot = tpot_all[sel]
    itl_lists = [np.diff(chunks[k]) if chunks[k].size > 1 else np.empty(0) for k in idx]
    itl = np.concatenate(itl_lists) if itl_lists else np.empty(0)
    reported = list_column(t, "chunk_tokens", np.int64)
    counts, bases = request_counts([chunks[k] for k in idx], [reported[k] for k in idx],
                                   out[idx])
    tok_lists = [per_token_itl(chunks[k], c) for k, c in zip(idx, counts, strict=True)]
    itl_token = np.concatenate(tok_lists) if tok_lists else np.empty(0)

    percentiles = {
        "ttft": _ci_block(ttft_s), "e2e": _ci_block(e2e_s), "itl": _ci_block(itl),
        "itl_per_token": _ci_block(itl_token),
        "tpot": _ci_block(tpot[np.isfinite(tpot)]),
        "ttft_intended": _ci_block(ttft_i), "e2e_intended": _ci_block(e2e_i),
    }
    buckets = length_buckets(inp[sel], out[sel], ttft_s, e2e_s, itl_lists, tok_lists)
    fe = fit_e2e(e2e_s * 1e3, inp[sel], out[sel], n_boot=n_boot, seed=seed)
    ft = fit_ttft(ttft_s * 1e3, inp[sel], n_boot=n_boot, seed=seed)
    fits = {"e2e": {**_fit_dict(fe), "origin": "t_sent"},
            "ttft": {**_fit_dict(ft), "origin": "t_sent"}}

    slo_section = None
    if slo is not None:
        max_itl = np.array([np.diff(c).max() if c.size > 1 else np.nan for c in chunks])
        m = in_w
        met, viol = evaluate_slo(
            slo, ok=(status == "ok")[m], ttft_ms=((t_ft - t_int) * 1e3)[m],
            e2e_ms=((t_done - t_int) * 1e3)[m], tpot_ms=(tpot_all * 1e3)[m],
            max_itl_ms=(max_itl * 1e3)[m], input_tokens=inp[m], output_tokens=out[m])
        slo_section = slo_report(slo, met, viol, w.duration_s)

    if target_tpot_ms is None and slo is not None:
        target_tpot_ms = slo.tpot_ms if slo.tpot_ms is not None else slo.itl_ms
    target_source = "given"
    if target_tpot_ms is None:
        finite = tpot[np.isfinite(tpot)]
        target_tpot_ms = (DEFAULT_TPOT_MARGIN * float(np.median(finite)) * 1e3
                          if finite.size else None)
        target_source = f"{DEFAULT_TPOT_MARGIN} x median TPOT of the window"
    if target_tpot_ms:
        smooth = smoothness([chunks[k] for k in idx], target_tpot_ms / 1e3, counts)
    else:
        smooth = {"fluidity_index": None, "fully_fluid_share": None, "stall_ratio": None,
                  "target_tpot_ms": None, "n_requests": 0}
    smooth["target_source"] = target_source

    result = {
        "window": w.as_dict(),
        "percentiles_ci": percentiles,
        "length_buckets": buckets,
        "fits": fits,
        "slo": slo_section,
        "smoothness": smooth,
        "tokens_per_chunk": basis_report(bases),
    }
    return plain(result, nonfinite_to_none=True)

