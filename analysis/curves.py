"""Latency-vs-load curves, the knee and goodput of a sweep (pure computation, no I/O).

Per run (one offered rate) and per metric, in ms:
  ttft, e2e   from t_intended (what a user sees)
  itl         inter-chunk intervals (from chunk arrival times)
  tpot        per request (t_done - t_first_token) / (output_tokens - 1)
  norm        normalised latency: e2e from intended / output tokens (ms per output token)
Percentiles are "inverted CDF" order statistics (the smallest value with at least p % of the
sample at or below it, as HdrHistogram's value-at-percentile), each with a distribution-free
95 % confidence interval from order statistics: the p-quantile lies in [x_(l), x_(u)] with
l, u the binomial(n, p) 2.5 % and 97.5 % quantiles (1-based ranks, u + 1); where l < 1 or
u > n the sample is too small for that side and the bound is None.

SLO: thresholds keyed ``<metric>_p<P>_ms`` (e.g. ``ttft_p99_ms: 500``).
Knee rule: the knee is the highest offered rate such that it and every lower tested rate meet
every SLO threshold by the point estimate. Its interval [knee_low, knee_high) is:
  knee_low  = the highest rate such that it and every lower rate meet the SLO *confidently*
              (upper CI bound <= threshold); None if the lowest rate does not;
  knee_high = the first tested rate above the knee that violates the SLO *confidently*
              (lower CI bound > threshold); None if none does (the knee is then not bounded
              above by the data).
So the interval covers both the sampling uncertainty and the gap between tested rates.
Goodput: ok requests whose own ttft, e2e, norm and tpot (an ``itl_*`` threshold is applied to
the request's tpot, its mean ITL) are within every threshold given, per second of the run.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from scipy import stats

from analysis.load import Run
from analysis.metrics import col, derive

METRICS = ("ttft", "itl", "tpot", "e2e", "norm")
CURVE_PERCENTILES = (50.0, 90.0, 99.0)
SLO_RE = re.compile(r"^(ttft|itl|tpot|e2e|norm)_p(\d+(?:\.\d+)?)_ms$")
METRIC_LABEL = {"ttft": "TTFT", "itl": "ITL", "itl_per_token": "ITL (per token)",
                "tpot": "TPOT", "e2e": "E2E",
                "norm": "E2E / output token"}


def check_slo_keys(slo: dict[str, float]) -> None:
    for k, v in slo.items():
        m = SLO_RE.match(k)
        if not m or not (0 < float(m.group(2)) < 100):
            raise ValueError(f"unknown SLO key {k!r}: expected <metric>_p<P>_ms with metric one of "
                             f"{', '.join(METRICS)} and 0 < P < 100, e.g. ttft_p99_ms")
        if not (v > 0) or math.isinf(v):
            raise ValueError(f"SLO {k}={v}: the threshold must be a positive number of ms")


def pword(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else str(p)


def percentile_ci(x: np.ndarray, p: float, conf: float = 0.95
                  ) -> tuple[float | None, float | None, float | None]:
    """(estimate, low, high) of the p-th percentile; bounds None where n is too small."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return None, None, None
    q = p / 100.0
    est = float(x[max(int(math.ceil(q * n)) - 1, 0)])  # inverted CDF
    a = (1 - conf) / 2
    lo_rank = int(stats.binom.ppf(a, n, q))  # 1-based rank of the lower bound
    hi_rank = int(stats.binom.ppf(1 - a, n, q)) + 1
    lo = float(x[lo_rank - 1]) if lo_rank >= 1 else None
    hi = float(x[hi_rank - 1]) if hi_rank <= n else None
    return est, lo, hi


def request_metrics(run: Run) -> dict[str, np.ndarray]:
    """Per-request metrics of the ok requests in ms (aligned), plus ``itl`` (per chunk) and
    ``itl_per_token`` (analysis/tokens.py), which are not aligned with requests."""
    t = run.requests
    ok = t.column("status").to_numpy(zero_copy_only=False) == "ok"
    t_int, t_ft, t_done = (col(t, c)[ok] for c in ("t_intended", "t_first_token", "t_done"))
    out = col(t, "output_tokens", np.int64)[ok]
    inp = col(t, "input_tokens", np.int64)[ok]
    e2e = (t_done - t_int) * 1e3
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(out > 1, (t_done - t_ft) * 1e3 / np.maximum(out - 1, 1), np.nan)
        norm = np.where(out > 0, e2e / np.maximum(out, 1), np.nan)
    d = derive(t)
    return {
        "ttft": (t_ft - t_int) * 1e3, "e2e": e2e, "tpot": tpot, "norm": norm,
        "itl": d.itl * 1e3, "itl_per_token": d.itl_token * 1e3,
        "input_tokens": inp, "output_tokens": out,
        "t_intended": t_int,
    }


def _duration(run: Run) -> float:
    t = run.requests
    ends = np.concatenate([col(t, "t_done"), col(t, "t_sent")])
    ends = ends[np.isfinite(ends)]
    return float(ends.max()) if ends.size else 0.0


def good_mask(m: dict[str, np.ndarray], slo: dict[str, float]) -> np.ndarray:
    """Ok requests that meet every per-request threshold of the SLO (see module doc)."""
    good = np.ones(len(m["e2e"]), dtype=bool)
    for k, thr in slo.items():
        metric = SLO_RE.match(k).group(1)
        v = m["tpot"] if metric == "itl" else m[metric]
        good &= np.nan_to_num(v, nan=0.0) <= thr
    return good


def run_point(run: Run, rate: float | None, slo: dict[str, float] | None = None) -> dict[str, Any]:
    """One point of the curves: offered and achieved rate, percentiles with CIs, goodput."""
    m = request_metrics(run)
    status = run.requests.column("status").to_numpy(zero_copy_only=False)
    dur = _duration(run)
    n_ok = int((status == "ok").sum())
    pts: dict[str, Any] = {}
    for metric in METRICS:
        d: dict[str, Any] = {"n": int(np.isfinite(m[metric]).sum())}
        for p in CURVE_PERCENTILES:
            est, lo, hi = percentile_ci(m[metric], p)
            d[f"p{pword(p)}"] = est
            d[f"p{pword(p)}_ci"] = [lo, hi]
        pts[metric] = d
    t_int = col(run.requests, "t_intended")
    span = float(t_int.max()) if t_int.size else 0.0
    point: dict[str, Any] = {
        "rate": rate,
        "run_dir": str(run.path),
        "intended_rate": (len(t_int) / span) if span > 0 else None,
        "achieved_rps": n_ok / dur if dur > 0 else 0.0,
        "duration_s": dur,
        "n": int(len(status)),
        "ok": n_ok,
        "failed": int(len(status) - n_ok),
        "latency_ms": pts,
    }
    if slo:
        good = good_mask(m, slo)
        point["good"] = int(good.sum())
        point["goodput_rps"] = float(good.sum() / dur) if dur > 0 else 0.0
        point["good_fraction"] = float(good.mean()) if good.size else 0.0
        point["slo_checks"] = slo_checks(m, slo)
    return point


def slo_checks(m: dict[str, np.ndarray], slo: dict[str, float]) -> dict[str, Any]:
    out = {}
    for k, thr in slo.items():
        g = SLO_RE.match(k)
        est, lo, hi = percentile_ci(m[g.group(1)], float(g.group(2)))
        out[k] = {
            "threshold_ms": thr, "value_ms": est, "ci": [lo, hi],
            "meets": est is not None and est <= thr,
            "meets_confidently": hi is not None and hi <= thr,
            "violates_confidently": lo is not None and lo > thr,
        }
    return out


def knee(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The knee rule of the module doc, over points sorted by offered rate."""
    pts = sorted((p for p in points if p.get("slo_checks")), key=lambda p: p["rate"])
    if not pts:
        return {"rate": None, "low": None, "high": None, "note": "no SLO given"}
    meets = [all(c["meets"] for c in p["slo_checks"].values()) for p in pts]
    conf = [all(c["meets_confidently"] for c in p["slo_checks"].values()) for p in pts]
    viol = [any(c["violates_confidently"] for c in p["slo_checks"].values()) for p in pts]
    k = -1
    while k + 1 < len(pts) and meets[k + 1]:
        k += 1
    lo = -1
    while lo + 1 < len(pts) and conf[lo + 1]:
        lo += 1
    hi = next((i for i in range(k + 1, len(pts)) if viol[i]), None)
    res = {
        "rate": pts[k]["rate"] if k >= 0 else None,
        "achieved_rps": pts[k]["achieved_rps"] if k >= 0 else None,
        "low": pts[lo]["rate"] if lo >= 0 else None,
        "high": pts[hi]["rate"] if hi is not None else None,
    }
    if k < 0:
        res["note"] = "even the lowest tested rate misses the SLO"
    elif k == len(pts) - 1:
        res["note"] = "every tested rate meets the SLO: the knee is at or above the highest rate"
    elif hi is None:
        res["note"] = "no higher rate violates the SLO confidently: the knee is not bounded above"
    else:
        low = "?" if res["low"] is None else f"{res['low']:g}"
        res["note"] = (f"the knee lies in [{low}, {res['high']:g}) req/s"
                       + (" (? = even the lowest rate does not meet the SLO confidently: too "
                          "few requests for the CI, or too close to a threshold)"
                          if res["low"] is None else ""))
    return res


def curves_of(sweep, slo: dict[str, float] | None = None) -> dict[str, Any]:
    """Curves of a loaded sweep (analysis.sweep.Sweep): one point per rate, knee, stop info."""
    points = [run_point(r, rate, slo) for rate, r in zip(sweep.rates, sweep.runs, strict=True)]
    return {
        "slo": slo,
        "points": points,
        "knee": knee(points) if slo else None,
        "stopped": sweep.meta.get("stopped"),
        "probe": sweep.meta.get("probe"),
    }


def render_curves(c: dict[str, Any]) -> str:
    head = (f"{'rate':>8} {'achieved':>9} {'ok':>5} {'fail':>5} {'TTFT p50':>9} {'TTFT p99':>9} "
            f"{'ITL p50':>8} {'ITL p99':>8} {'E2E p50':>8} {'E2E p99':>8} {'ms/tok p50':>10}")
    if c.get("slo"):
        head += f" {'goodput':>8}"
    lines = ["latency in ms from each request's intended send time (ITL per chunk)", head,
             "-" * len(head)]

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    for p in c["points"]:
        lat = p["latency_ms"]
        row = (f"{p['rate']:>8g} {p['achieved_rps']:>9.2f} {p['ok']:>5} {p['failed']:>5} "
               f"{f(lat['ttft']['p50']):>9} {f(lat['ttft']['p99']):>9} {f(lat['itl']['p50']):>8} "
               f"{f(lat['itl']['p99']):>8} {f(lat['e2e']['p50']):>8} {f(lat['e2e']['p99']):>8} "
               f"{f(lat['norm']['p50']):>10}")
        if c.get("slo"):
            row += f" {p['goodput_rps']:>8.2f}"
        lines.append(row)
    k = c.get("knee")
    if k:
        lines.append(f"knee (SLO {c['slo']}): {k['rate']} req/s; {k['note']}")
    return "\n".join(lines)
