"""Service-level objectives, attainment and goodput.

A request MEETS the SLO when it succeeded (status ok) and every threshold that is set holds,
all measured from ``t_intended`` (what a user sees, generator lag included):

    ttft_ms              ttft <= ttft_ms
    tpot_ms              tpot <= tpot_ms           (requests with > 1 output token)
    itl_ms               max_itl <= itl_ms         (the request's largest inter-chunk gap:
                                                    an ITL SLO is about the worst stall a
                                                    reader sees, not the average)
    e2e_ms               e2e <= e2e_ms
    length-aware (both parts needed; "the same work" is allowed more time for longer work):
    e2e_base_ms + e2e_per_output_ms     e2e  <= e2e_base_ms + e2e_per_output_ms * output_tokens
    ttft_base_ms + ttft_per_input_ms    ttft <= ttft_base_ms + ttft_per_input_ms * input_tokens

Over the requests whose ``t_intended`` lies in the steady window [start, end]:

    attainment  = #meeting / #requests in the window   (failed requests count as misses)
    goodput_rps = #meeting / (end - start)

``violations_by_metric`` counts, per threshold, the ok requests that broke it (a request can
break several), and ``failed`` the requests that did not succeed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

_PAIRS = (("e2e_base_ms", "e2e_per_output_ms"), ("ttft_base_ms", "ttft_per_input_ms"))


@dataclass(frozen=True)
class SLO:
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    itl_ms: float | None = None
    e2e_ms: float | None = None
    e2e_base_ms: float | None = None
    e2e_per_output_ms: float | None = None
    ttft_base_ms: float | None = None
    ttft_per_input_ms: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and (not isinstance(v, int | float) or not math.isfinite(v) or v < 0):
                raise ValueError(f"SLO {f.name} must be a number of ms >= 0, got {v!r}")
        for a, b in _PAIRS:
            if (getattr(self, a) is None) != (getattr(self, b) is None):
                raise ValueError(f"length-aware SLO needs both {a} and {b}")

    def thresholds(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}


def parse_slo(text: str) -> SLO:
    """``"ttft_ms=500,tpot_ms=50,e2e_ms=10000"`` (any of the SLO fields) to an SLO."""
    names = {f.name for f in fields(SLO)}
    kw: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, val = part.partition("=")
        key = key.strip()
        if not sep or key not in names:
            raise ValueError(f"--slo {part!r}: expected KEY=MS with KEY one of {sorted(names)}")
        try:
            kw[key] = float(val)
        except ValueError:
            raise ValueError(f"--slo {part!r}: {val!r} is not a number of ms") from None
    if not kw:
        raise ValueError(f"--slo {text!r}: no threshold given, e.g. ttft_ms=500,tpot_ms=50")
    return SLO(**kw)


def _le(x: np.ndarray, limit: np.ndarray | float) -> np.ndarray:
    """x <= limit, where an undefined x (NaN: e.g. no TPOT for a 1-token answer) passes."""
    return ~(x > limit)


def evaluate_slo(slo: SLO, *, ok: np.ndarray, ttft_ms: np.ndarray, e2e_ms: np.ndarray,
                 tpot_ms: np.ndarray, max_itl_ms: np.ndarray, input_tokens: np.ndarray,
                 output_tokens: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Per-request bool "meets every threshold" and violations per threshold (arrays aligned
    per request; latency NaN where undefined)."""
    ok = np.asarray(ok, dtype=bool)
    checks: dict[str, np.ndarray] = {}
    if slo.ttft_ms is not None:
        checks["ttft_ms"] = _le(ttft_ms, slo.ttft_ms)
    if slo.tpot_ms is not None:
        checks["tpot_ms"] = _le(tpot_ms, slo.tpot_ms)
    if slo.itl_ms is not None:
        checks["itl_ms"] = _le(max_itl_ms, slo.itl_ms)
    if slo.e2e_ms is not None:
        checks["e2e_ms"] = _le(e2e_ms, slo.e2e_ms)
    if slo.e2e_base_ms is not None:
        lim = slo.e2e_base_ms + slo.e2e_per_output_ms * np.asarray(output_tokens, np.float64)
        checks["e2e_length_aware"] = _le(e2e_ms, lim)
    if slo.ttft_base_ms is not None:
        lim = slo.ttft_base_ms + slo.ttft_per_input_ms * np.asarray(input_tokens, np.float64)
        checks["ttft_length_aware"] = _le(ttft_ms, lim)
    met = ok.copy()
    violations = {"failed": int((~ok).sum())}
    for k, passed in checks.items():
        met &= passed
        violations[k] = int((ok & ~passed).sum())
    return met, violations


def slo_report(slo: SLO, met: np.ndarray, violations: dict[str, int],
               window_s: float) -> dict:
    """The ``slo`` section of the analysis: thresholds, attainment, goodput, violations."""
    n = int(np.asarray(met).size)
    k = int(np.asarray(met).sum())
    return {
        "thresholds": slo.thresholds(),
        "attainment": k / n if n else None,
        "goodput_rps": k / window_s if window_s > 0 else None,
        "n_requests": n,
        "n_met": k,
        "violations_by_metric": violations,
    }
