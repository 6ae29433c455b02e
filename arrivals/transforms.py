"""Declared transforms of a Trace: small pure functions, each recorded in ``trace.transforms``.

Every function returns a new Trace and appends one dict ``{"op": name, ...parameters,
...what it did}`` to its history, so a run's manifest says exactly how the replayed schedule
was derived from the file. Random transforms take a seed (numpy default_rng).

Rate changes keep the trace's burst structure instead of replacing its arrival process:

- thinning keeps each request independently with probability p. The kept stream has mean
  rate p * rate and the same shape of the rate over time (bursts stay where they were, p times
  as tall). For a renewal stream with gap CV c, a thinned gap is a Geometric(p) sum of gaps, so
  CV'^2 = p c^2 + (1 - p): thinning moves the CV towards 1 (Poisson), and leaves CV = 1 alone.
- superposition overlays k copies of the trace, copy j cyclically shifted by an offset
  u_j ~ Uniform(0, span) (t -> (t + u_j) mod span; copy 0 is not shifted). Each copy keeps
  every gap and burst of the original (except the one gap that wraps), and the span is
  unchanged, so the mean rate is k times the original.
- ``to_rate`` reaches any target mean rate R from the trace's rate r: thinning with p = R/r
  when R < r; otherwise k = ceil(R/r) copies superposed, then thinned with p = R/(k r).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from arrivals.traces.trace import Trace


def window(trace: Trace, start: float | None = None, end: float | None = None) -> Trace:
    """Requests with start <= t < end (seconds from the trace's first request), re-timed so
    that the window starts at 0 (``end`` None = to the end)."""
    lo = 0.0 if start is None else float(start)
    hi = math.inf if end is None else float(end)
    if not lo < hi:
        raise ValueError(f"time window start must be before its end, got {lo}:{hi}")
    keep = (trace.t >= lo) & (trace.t < hi)
    if not keep.any():
        raise ValueError(f"time window {lo}:{hi} s holds no request of {trace.source} "
                         f"(the trace spans 0:{trace.span:g} s)")
    return trace.take(keep, t=trace.t[keep] - lo).with_transform(
        {"op": "window", "start": lo, "end": None if end is None else hi, "kept": int(keep.sum())})


def speedup(trace: Trace, factor: float) -> Trace:
    """Time scaling: t -> t / factor (factor 2 halves every gap and the span, doubles the rate)."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"speed-up factor must be a finite number > 0, got {factor!r}")
    return trace.take(np.arange(len(trace)), t=trace.t / factor).with_transform(
        {"op": "speedup", "factor": float(factor)})


def thin(trace: Trace, p: float, seed: int = 0) -> Trace:
    """Keep each request independently with probability ``p`` (mean rate x p)."""
    if not 0 < p <= 1:
        raise ValueError(f"thinning probability must be in (0, 1], got {p!r}")
    keep = np.random.default_rng(seed).uniform(size=len(trace)) < p
    if not keep.any():
        keep[0] = True  # a trace is never empty; one request is the honest minimum
    return trace.take(keep).with_transform(
        {"op": "thin", "p": float(p), "seed": seed, "kept": int(keep.sum())})


def superpose_copies(trace: Trace, k: int, seed: int = 0) -> Trace:
    """Overlay ``k`` cyclically time-shifted copies of the trace (mean rate x k, same span)."""
    if not (isinstance(k, int | np.integer) and k >= 1):
        raise ValueError(f"number of copies must be a whole number >= 1, got {k!r}")
    span = trace.span
    offsets = np.concatenate([[0.0], np.random.default_rng(seed).uniform(0, span, size=k - 1)])
    t = np.concatenate([np.mod(trace.t + u, span) if u else trace.t for u in offsets])
    idx = np.tile(np.arange(len(trace)), k)
    order = np.argsort(t, kind="stable")
    out = trace.take(idx[order], t=t[order] - t[order][0])
    return out.with_transform({"op": "superpose", "copies": int(k), "seed": seed,
                               "offsets_s": [float(u) for u in offsets]})


def to_rate(trace: Trace, rate: float, seed: int = 0) -> Trace:
    """Thin or superpose to a target mean rate (requests/s over the span), keeping bursts."""
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"target rate must be a finite number > 0 req/s, got {rate!r}")
    r = trace.mean_rate
    if not math.isfinite(r):
        raise ValueError(f"{trace.source}: a trace of {len(trace)} request(s) over "
                         f"{trace.span:g} s has no mean rate to change")
    ratio = rate / r
    if ratio <= 1:
        out = thin(trace, ratio, seed)
    else:
        k = math.ceil(ratio)
        ss = np.random.SeedSequence(seed).generate_state(2)
        out = superpose_copies(trace, k, int(ss[0]))
        if ratio < k:
            out = thin(out, ratio / k, int(ss[1]))
    return out.with_transform({"op": "to_rate", "rate": float(rate), "from_rate": float(r),
                               "seed": seed, "rows": len(out)})


def filter_rows(
    trace: Trace,
    *,
    model: str | Sequence[str] | None = None,
    log_type: str | Sequence[str] | None = None,
    success: bool | None = None,
) -> Trace:
    """Keep requests of the given model(s) / log type(s) / success state (None = any)."""
    keep = np.ones(len(trace), dtype=bool)
    spec: dict = {"op": "filter"}
    for key, want in (("model", model), ("log_type", log_type)):
        if want is None:
            continue
        if key not in trace.extra:
            raise ValueError(f"{trace.source}: this {trace.format} trace has no {key} column "
                             "to filter on")
        wanted = {want} if isinstance(want, str) else set(want)
        keep &= np.fromiter((v in wanted for v in trace.extra[key]), bool, len(trace))
        spec[key] = sorted(wanted)
    if success is not None:
        keep &= trace.ok == success
        spec["success"] = bool(success)
    if not keep.any():
        raise ValueError(f"{trace.source}: filter {spec} keeps no request")
    spec["kept"] = int(keep.sum())
    spec["dropped"] = int(len(trace) - keep.sum())
    return trace.take(keep).with_transform(spec)


def resample_lengths(trace: Trace, seed: int = 0, *, source: Trace | None = None) -> Trace:
    """New (input, output) pairs for every request, drawn with replacement from the joint
    empirical distribution of ``source`` (default: the trace itself), so the correlation
    between input and output lengths is kept; times are unchanged."""
    src = trace if source is None else source
    j = np.random.default_rng(seed).integers(0, len(src), size=len(trace))
    from dataclasses import replace

    out = replace(trace, input_tokens=src.input_tokens[j].copy(),
                  output_tokens=src.output_tokens[j].copy(), ok=src.ok[j].copy())
    return out.with_transform({"op": "resample_lengths", "seed": seed,
                               "from": src.source, "from_rows": len(src)})
