"""The run summary (summary.json): latency, throughput, errors and the generator's self-check.

Two views of latency are given: from ``t_intended`` (what a user of the service sees, including
any lateness of the generator and closed-loop slot waiting) and from ``t_sent`` (what the
service did). The flat keys at the top level (``request_throughput``, ``mean_ttft_ms``,
``p99_itl_ms`` ...) mean what they mean in ``vllm bench serve``'s result JSON, measured from
``t_sent`` as vLLM does, so scripts written for it keep working (docs/summary.md).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from analysis.errors import error_table
from analysis.histograms import PERCENTILES, describe_ms, percentile_word
from analysis.jsonsafe import plain
from analysis.load import Run
from analysis.metrics import col, derive
from analysis.selfcheck import interarrival_ks, rate_windows, verdict
from analysis.sessions import first_turn_mask, session_summary
from analysis.tokencheck import token_count_check
from analysis.ttft_parts import summarize_components
from loadgen.records import SCHEMA_VERSION

VLLM_METRICS = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2el": "e2e"}


def _strip_hdr(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "hdr"}


def summarize(run: Run) -> dict[str, Any]:
    t = run.requests
    m = run.manifest
    d = derive(t)
    status = t.column("status").to_numpy(zero_copy_only=False)
    by_status = dict(Counter(status.tolist()))
    errors = t.column("error").to_numpy(zero_copy_only=False)
    examples = {}
    for s, e in zip(status.tolist(), errors.tolist(), strict=True):
        if s != "ok" and s not in examples:
            examples[s] = e
    t_int = col(t, "t_intended")
    t_sent = col(t, "t_sent")
    t_done = col(t, "t_done")

    cfg = m.get("config", {})
    wl = m.get("workload", {})
    gen = m.get("generator", {})
    n_intended = int(wl.get("num_requests", len(t)))
    rate = wl.get("request_rate")
    burst = rate is not None and (rate == "inf" or (isinstance(rate, float) and math.isinf(rate)))
    n_ok = int(d.ok.sum())
    n_failed = int(len(t) - n_ok)
    ends = np.concatenate([t_done[np.isfinite(t_done)], t_sent[np.isfinite(t_sent)]])
    duration = float(ends.max()) if ends.size else 0.0
    in_total = int(d.input_tokens.sum())
    out_total = int(d.output_tokens.sum())

    lat_sent = {
        "ttft": describe_ms(d.ttft_sent),
        "tpot": describe_ms(d.tpot),
        "itl": describe_ms(d.itl),
        "itl_per_token": describe_ms(d.itl_token),
        "e2e": describe_ms(d.e2e_sent),
    }
    lat_int = {"ttft": describe_ms(d.ttft_intended), "e2e": describe_ms(d.e2e_intended)}
    mc = cfg.get("max_concurrency")
    lag_by_worker = send_lag_by_worker(t, d)
    check = verdict(
        d,
        max_send_lag_ms=float(cfg.get("max_send_lag_ms", 5.0)),
        burst=burst,
        interrupted=m.get("interrupted_by"),
        n_intended=n_intended,
        n_recorded=len(t),
        lag_p99_by_worker={w: v.get("p99") for w, v in lag_by_worker.items()},
    )
    sources = {
        "input": dict(Counter(t.column("input_tokens_source").to_numpy(zero_copy_only=False)[d.ok].tolist())),
        "output": dict(Counter(t.column("output_tokens_source").to_numpy(zero_copy_only=False)[d.ok].tolist())),
    }
    first = first_turn_mask(t)  # the scheduled requests (follow-up turns are not)
    # the workload's span (also right for a partial run, whose last records come early)
    span_wl = wl.get("intended_duration_s")
    intended_span = float(span_wl) if isinstance(span_wl, int | float) and span_wl > 0 else (
        float(np.nanmax(t_int)) if len(t_int) else 0.0)
    sent_ok = t_sent[np.isfinite(t_sent)]
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_dir": str(run.path),
        "status": m.get("status"),
        "mode": "open-loop" if not mc else f"closed-loop (max_concurrency={mc})",
        "validity": check,
        "counts": {
            "intended": n_intended,
            "recorded": len(t),
            "sent": int(d.sent.sum()),
            "not_sent": n_intended - int(d.sent.sum()),
            "ok": n_ok,
            "failed": n_failed,
            "by_status": by_status,
        },
        "errors": {"by_status": {k: v for k, v in by_status.items() if k != "ok"}, "examples": examples,
                   "by_cause": error_table(status.tolist(),
                                           t.column("http_status").to_pylist(), errors.tolist())},
        "throughput": {
            "duration_s": duration,
            "request_throughput": n_ok / duration if duration > 0 else 0.0,
            "output_token_throughput": out_total / duration if duration > 0 else 0.0,
            "total_token_throughput": (in_total + out_total) / duration if duration > 0 else 0.0,
            "intended_rate": (n_intended / intended_span) if intended_span > 0 else None,
            "achieved_send_rate": (
                (sent_ok.size / (sent_ok.max() - 0.0)) if sent_ok.size and sent_ok.max() > 0 else None
            ),
        },
        "tokens": {"input_total": in_total, "output_total": out_total, "sources": sources,
                   "per_chunk": d.token_basis},
        "ttft_decomposition": summarize_components(
            t, streamed=cfg.get("client", {}).get("stream", True) is not False),
        "latency_ms": {
            "from_sent": {k: _strip_hdr(v) for k, v in lat_sent.items()},
            "from_intended": {k: _strip_hdr(v) for k, v in lat_int.items()},
        },
        "self_check": {
            "send_lag_ms": _strip_hdr(describe_ms(d.send_lag)),
            "send_lag_ms_by_worker": lag_by_worker,
            "workers": len(lag_by_worker),
            "slot_wait_ms": _strip_hdr(describe_ms(d.slot_wait)) if mc else None,
            "interarrival_ks": interarrival_ks(t_int[first], t_sent[first]) if not burst
            else None,
            "rate_windows": rate_windows(t_int, t_sent, 1.0),
            "event_loop_lag_ms": gen.get("event_loop_lag_ms"),
            "client_cpu": _cpu(gen, len(t), out_total),
        },
        "sessions": session_summary(t),
        "replay_fidelity": _replay_fidelity(wl, t_int[first], t_sent[first], burst),
        "token_counts": token_count_check(t, d.ok, _expected_source(wl)),
        "histograms": {
            "from_sent": {k: v.get("hdr") for k, v in lat_sent.items()},
            "from_intended": {k: v.get("hdr") for k, v in lat_int.items()},
        },
    }
    summary.update(_vllm_keys(summary, lat_sent, cfg, wl, n_ok, n_failed, in_total, out_total, duration))
    return plain(summary)



def send_lag_by_worker(t, d) -> dict[str, dict]:
    """Send lag (ms) of each generator worker, from the records' ``worker`` column: one entry
    per worker that sent anything (a single-process run has one, worker "0")."""
    w = col(t, "worker", np.int64)[d.sent]
    return {str(k): _strip_hdr(describe_ms(d.send_lag[w == k])) for k in np.unique(w).tolist()}


def _replay_fidelity(wl: dict, t_int: np.ndarray, t_sent: np.ndarray, burst: bool) -> dict | None:
    """For a trace replay: realised vs the trace's inter-arrival gaps (first turns), after
    the declared transforms (arrivals/fidelity.py); None for other workloads."""
    if wl.get("kind") not in ("trace", "trace_sessions") or burst:
        return None
    from arrivals.fidelity import replay_fidelity

    try:
        out = replay_fidelity(t_int, t_sent)
    except ValueError as e:
        return {"note": str(e)}
    tr = wl.get("trace") or {}
    return {"reference": "the trace's request times after its declared transforms "
                         "(first turns of sessions)", "trace": tr.get("source"),
            "transforms": [x.get("op") for x in tr.get("transforms", [])], **out}


def _expected_source(wl: dict) -> str | None:
    """What counted the workload's expected input tokens (for the token-count check)."""
    p = wl.get("prompts")
    if isinstance(p, dict) and p.get("prompt_tokens_from"):
        return f"synthetic prompts, exact by {p['prompt_tokens_from']}"
    return wl.get("token_count") or "words (whitespace-word estimate)"


def _cpu(gen: dict, n_requests: int, out_tokens: int) -> dict | None:
    cpu = gen.get("cpu_s")
    wall = gen.get("wall_s")
    if cpu is None:
        return None
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "utilisation": cpu / wall if wall else None,
        "us_per_request": cpu / n_requests * 1e6 if n_requests else None,
        "us_per_output_token": cpu / out_tokens * 1e6 if out_tokens else None,
    }


def _vllm_keys(s, lat, cfg, wl, n_ok, n_failed, in_total, out_total, duration) -> dict:
    """vllm bench serve's flat result keys (measured from t_sent, as vLLM measures)."""
    tp = s["throughput"]
    out: dict[str, Any] = {
        "duration": duration,
        "completed": n_ok,
        "failed": n_failed,
        "total_input_tokens": in_total,
        "total_output_tokens": out_total,
        "request_throughput": tp["request_throughput"],
        "output_throughput": tp["output_token_throughput"],
        "total_token_throughput": tp["total_token_throughput"],
        "request_rate": wl.get("request_rate"),
        "burstiness": wl.get("burstiness"),
        "max_concurrency": cfg.get("max_concurrency"),
    }
    for vname, ours in VLLM_METRICS.items():
        dd = lat[ours]
        out[f"mean_{vname}_ms"] = dd.get("mean")
        out[f"median_{vname}_ms"] = dd.get("p50")
        out[f"std_{vname}_ms"] = dd.get("std")
        for p in PERCENTILES:
            out[f"p{percentile_word(p)}_{vname}_ms"] = dd.get(f"p{percentile_word(p)}")
    return out
