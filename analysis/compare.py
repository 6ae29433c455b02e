"""Comparing runs (or sweeps, rate by rate) on the same work.

For each per-request metric (ttft and e2e from intended, tpot, e2e per output token) and for
p50 and p90, the difference B - A of the percentiles is given with a percentile-bootstrap 95 %
confidence interval (requests resampled with replacement within each run, independently,
``n_boot`` times, seeded); a difference is *significant* when that interval excludes 0.
Beside it, the two-sided Mann-Whitney U test of the whole distributions (scipy) gives a
p-value. ITL per chunk (``itl``) and per token (``itl_per_token``, which differ where a chunk
carries several tokens, analysis/tokens.py): the gaps of one request are not independent, so
their percentiles are shown without a test (tpot, the per-request mean ITL, carries the test).
The same is done per length bucket (floor(log2 input tokens), floor(log2 output tokens)) for
buckets with at least ``min_bucket`` requests in both runs: "is B faster for the same work".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from analysis.curves import METRIC_LABEL, percentile_ci, request_metrics
from analysis.load import Run, load_run
from analysis.sweep import is_sweep, load_sweep

TESTED = ("ttft", "e2e", "tpot", "norm")
UNTESTED = ("itl", "itl_per_token")  # percentiles only (module docstring)
CMP_PERCENTILES = (50.0, 90.0)


def bootstrap_diff(a: np.ndarray, b: np.ndarray, p: float, n_boot: int = 1000,
                   seed: int = 0, conf: float = 0.95) -> dict[str, Any]:
    """Percentile-bootstrap CI of percentile_p(b) - percentile_p(a)."""
    a = a[np.isfinite(a)]
    b = b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return {"diff": None, "ci": [None, None], "significant": False}
    rng = np.random.default_rng(seed)

    def boot(x: np.ndarray) -> np.ndarray:
        out = np.empty(n_boot)
        step = max(1, 2_000_000 // x.size)  # bounded memory: step resamples at a time
        for i in range(0, n_boot, step):
            k = min(step, n_boot - i)
            idx = rng.integers(0, x.size, size=(k, x.size))
            out[i:i + k] = np.percentile(x[idx], p, axis=1, method="inverted_cdf")
        return out

    d = boot(b) - boot(a)
    alpha = (1 - conf) / 2
    lo, hi = (float(v) for v in np.quantile(d, [alpha, 1 - alpha]))
    diff = float(np.percentile(b, p, method="inverted_cdf")
                 - np.percentile(a, p, method="inverted_cdf"))
    return {"diff": diff, "ci": [lo, hi], "significant": bool(lo > 0 or hi < 0)}


def mann_whitney(a: np.ndarray, b: np.ndarray) -> float | None:
    a = a[np.isfinite(a)]
    b = b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return None
    return float(stats.mannwhitneyu(b, a, alternative="two-sided").pvalue)


def _metric_block(ma: dict, mb: dict, n_boot: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in (*TESTED, *UNTESTED):
        a, b = ma[metric], mb[metric]
        d: dict[str, Any] = {"n_a": int(np.isfinite(a).sum()), "n_b": int(np.isfinite(b).sum())}
        for p in CMP_PERCENTILES:
            key = f"p{int(p)}"
            va, vb = percentile_ci(a, p)[0], percentile_ci(b, p)[0]
            d[key] = {"a": va, "b": vb}
            if metric in TESTED:
                d[key].update(bootstrap_diff(a, b, p, n_boot, seed))
            else:
                d[key]["diff"] = None if va is None or vb is None else vb - va
                d[key]["note"] = "gaps within a request are not independent: no test"
        if metric in TESTED:
            d["mann_whitney_p"] = mann_whitney(a, b)
        out[metric] = d
    return out


def _bucket(x: np.ndarray) -> np.ndarray:
    return np.floor(np.log2(np.maximum(x, 1))).astype(int)


def compare_runs(a: Run, b: Run, n_boot: int = 1000, seed: int = 0,
                 min_bucket: int = 20) -> dict[str, Any]:
    """B against A: overall and per (log2 input, log2 output) length bucket."""
    ma, mb = request_metrics(a), request_metrics(b)
    res: dict[str, Any] = {
        "a": str(a.path), "b": str(b.path),
        "same_work": same_work(a, b, ma, mb),
        "overall": _metric_block(ma, mb, n_boot, seed),
        "buckets": [],
    }
    ba = (_bucket(ma["input_tokens"]), _bucket(ma["output_tokens"]))
    bb = (_bucket(mb["input_tokens"]), _bucket(mb["output_tokens"]))
    keys = sorted(set(zip(*ba, strict=True)) & set(zip(*bb, strict=True)))
    for ki, ko in keys:
        sa = (ba[0] == ki) & (ba[1] == ko)
        sb = (bb[0] == ki) & (bb[1] == ko)
        if sa.sum() < min_bucket or sb.sum() < min_bucket:
            continue
        cell: dict[str, Any] = {"input_lo": 2 ** ki, "input_hi": 2 ** (ki + 1),
                                "output_lo": 2 ** ko, "output_hi": 2 ** (ko + 1),
                                "n_a": int(sa.sum()), "n_b": int(sb.sum())}
        for metric in ("ttft", "e2e"):
            x, y = ma[metric][sa], mb[metric][sb]
            cell[metric] = {"p50": bootstrap_diff(x, y, 50.0, n_boot, seed),
                            "mann_whitney_p": mann_whitney(x, y)}
        res["buckets"].append(cell)
    return res


def same_work(a: Run, b: Run, ma: dict, mb: dict) -> dict[str, Any]:
    """Is it the same work? Workload settings that differ, and a KS test of the lengths."""
    wa, wb = a.manifest.get("workload", {}), b.manifest.get("workload", {})
    ignore = {"seed"}
    diffs = {k: [wa.get(k), wb.get(k)] for k in sorted(set(wa) | set(wb))
             if k not in ignore and wa.get(k) != wb.get(k)}
    out: dict[str, Any] = {"workload_differences": diffs}
    for name in ("input_tokens", "output_tokens"):
        x, y = ma[name], mb[name]
        if x.size >= 2 and y.size >= 2 and not (np.all(x == x[0]) and np.all(y == x[0])):
            out[f"{name}_ks_p"] = float(stats.ks_2samp(x, y).pvalue)
        else:
            out[f"{name}_ks_p"] = None
    out["warning"] = (
        "the runs' length distributions differ (KS p < 0.01): compare per length bucket"
        if any((out[f"{n}_ks_p"] or 1.0) < 0.01 for n in ("input_tokens", "output_tokens"))
        else None)
    return out


def _rate_of(run: Run) -> float | None:
    r = run.manifest.get("workload", {}).get("request_rate")
    try:
        r = float(r)
    except (TypeError, ValueError):
        return None
    return None if math.isinf(r) else r


def compare_dirs(dirs: list[Path], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Each of dirs[1:] against dirs[0]; runs, or sweeps matched rate by rate."""
    kinds = {is_sweep(d) for d in dirs}
    if len(kinds) > 1:
        raise ValueError("compare either runs with runs or sweeps with sweeps, not both: "
                         + ", ".join(f"{d} ({'sweep' if is_sweep(d) else 'run'})" for d in dirs))
    out: dict[str, Any] = {"baseline": str(dirs[0]), "method": __doc__.split("\n\n")[1].strip(),
                           "comparisons": []}
    if kinds == {False}:
        a = load_run(dirs[0])
        for d in dirs[1:]:
            out["comparisons"].append({"rate": None, **compare_runs(a, load_run(d), n_boot,
                                                                    seed)})
        return out
    sa = load_sweep(dirs[0])
    for d in dirs[1:]:
        sb = load_sweep(d)
        common = sorted(set(sa.rates) & set(sb.rates))
        if not common:
            raise ValueError(f"sweeps {dirs[0]} and {d} share no offered rate ({sa.rates} vs "
                             f"{sb.rates}); run them with the same --rates")
        for r in common:
            ra = sa.runs[sa.rates.index(r)]
            rb = sb.runs[sb.rates.index(r)]
            out["comparisons"].append({"rate": r, **compare_runs(ra, rb, n_boot, seed)})
    return out


def render_comparison(res: dict[str, Any]) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    lines = [f"baseline A = {res['baseline']}; differences B - A in ms, 95% bootstrap CI; "
             "* = significant (CI excludes 0); MWU = Mann-Whitney U p"]
    for c in res["comparisons"]:
        lines.append("")
        lines.append(f"B = {c['b']}" + (f"  (rate {c['rate']:g})" if c["rate"] else ""))
        w = c["same_work"]
        if w["workload_differences"]:
            lines.append(f"  note: workload settings differ: {w['workload_differences']}")
        if w["warning"]:
            lines.append(f"  warning: {w['warning']}")
        head = (f"  {'metric':<20}{'A p50':>9}{'B p50':>9}{'diff':>9}{'95% CI':>20}"
                f"{'A p90':>9}{'B p90':>9}{'diff':>9}{'95% CI':>20}{'MWU p':>9}")
        lines.append(head)
        for metric, d in c["overall"].items():
            row = f"  {METRIC_LABEL[metric]:<20}"
            for k in ("p50", "p90"):
                x = d[k]
                ci = x.get("ci")
                cis = f"[{f(ci[0])}, {f(ci[1])}]" if ci else "(no test)"
                star = "*" if x.get("significant") else " "
                row += f"{f(x['a']):>9}{f(x['b']):>9}{f(x['diff']):>8}{star}{cis:>20}"
            mw = d.get("mann_whitney_p")
            row += f"{'-' if mw is None else f'{mw:.3g}':>9}"
            lines.append(row)
        for cell in c["buckets"]:
            e = cell["e2e"]["p50"]
            lines.append(
                f"  bucket in [{cell['input_lo']},{cell['input_hi']}) out [{cell['output_lo']},"
                f"{cell['output_hi']}) n={cell['n_a']}/{cell['n_b']}: E2E p50 diff {f(e['diff'])}"
                f"{'*' if e['significant'] else ''} [{f(e['ci'][0])}, {f(e['ci'][1])}]")
    return "\n".join(lines)
