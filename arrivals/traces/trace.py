"""The common Trace every reader returns: one row per request, columns as numpy arrays.

``t`` is seconds from the trace's first request (float64, sorted, t[0] = 0); ``input_tokens``
and ``output_tokens`` are int64; ``ok`` marks requests that the trace says succeeded (BurstGPT
logs failures as 0 tokens). ``row`` is the 1-based line number in the source file, kept as the
request's source id. Optional columns (model, log_type, session_id, hash_ids, ...) live in
``extra`` as lists. ``transforms`` is the declared history (a list of dicts) of what was done to
the trace since it was read; it goes into the run manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np


class TraceFormatError(ValueError):
    """A trace file could not be read; the message names the file, line and column."""

    def __init__(self, path: str | Path, line: int | None, column: str | None, what: str):
        where = f"{path}" + (f":{line}" if line is not None else "")
        col = f" column {column!r}:" if column else ""
        super().__init__(f"{where}:{col} {what}")
        self.path, self.line, self.column = str(path), line, column


@dataclass(frozen=True)
class Trace:
    t: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    ok: np.ndarray
    row: np.ndarray
    source: str = ""
    format: str = ""
    extra: dict[str, list[Any]] = field(default_factory=dict)
    transforms: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        n = len(self.t)
        for name in ("input_tokens", "output_tokens", "ok", "row"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"trace column {name} has {len(getattr(self, name))} rows, "
                                 f"not {n}")
        for k, v in self.extra.items():
            if len(v) != n:
                raise ValueError(f"trace column {k} has {len(v)} rows, not {n}")

    def __len__(self) -> int:
        return len(self.t)

    @property
    def span(self) -> float:
        """Seconds from the first to the last request."""
        return float(self.t[-1] - self.t[0]) if len(self) else 0.0

    @property
    def mean_rate(self) -> float:
        """Requests per second over the span: (n - 1) / span (n - 1 gaps in the span)."""
        return (len(self) - 1) / self.span if len(self) > 1 and self.span > 0 else float("nan")

    def take(self, idx: np.ndarray, *, t: np.ndarray | None = None) -> Trace:
        """The rows ``idx`` (indices or a boolean mask), optionally with new times."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(
            self,
            t=self.t[idx] if t is None else np.asarray(t, dtype=np.float64),
            input_tokens=self.input_tokens[idx],
            output_tokens=self.output_tokens[idx],
            ok=self.ok[idx],
            row=self.row[idx],
            extra={k: [v[i] for i in idx.tolist()] for k, v in self.extra.items()},
        )

    def with_transform(self, record: dict[str, Any]) -> Trace:
        return replace(self, transforms=(*self.transforms, record))

    def describe(self) -> dict[str, Any]:
        """The JSON-able description of the trace for the manifest."""
        return {"source": self.source, "format": self.format, "rows": len(self),
                "span_s": self.span, "transforms": [dict(d) for d in self.transforms]}


def build_trace(
    raw_t: list[float] | np.ndarray,
    inp: list[int],
    out: list[int],
    row: list[int],
    *,
    source: str | Path,
    format: str,
    ok: list[bool] | np.ndarray | None = None,
    extra: dict[str, list[Any]] | None = None,
) -> Trace:
    """Make a Trace from raw columns: times are made relative to the first request and the
    rows are sorted by time (stably, so equal timestamps keep file order)."""
    t = np.asarray(raw_t, dtype=np.float64)
    if t.size == 0:
        raise TraceFormatError(source, None, None, "no requests in the file (only a header?)")
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order[0]]
    okv = np.ones(t.size, dtype=bool) if ok is None else np.asarray(ok, dtype=bool)[order]
    ex = {k: [v[i] for i in order.tolist()] for k, v in (extra or {}).items()}
    return Trace(
        t=t,
        input_tokens=np.asarray(inp, dtype=np.int64)[order],
        output_tokens=np.asarray(out, dtype=np.int64)[order],
        ok=okv,
        row=np.asarray(row, dtype=np.int64)[order],
        source=str(source),
        format=format,
        extra=ex,
    )


def parse_int(s: str, path: str | Path, line: int, column: str) -> int:
    try:
        v = int(s)
    except (TypeError, ValueError):
        raise TraceFormatError(path, line, column,
                               f"expected a whole number of tokens, got {s!r}") from None
    if v < 0:
        raise TraceFormatError(path, line, column, f"token count must be >= 0, got {v}")
    return v


def parse_float(s: str, path: str | Path, line: int, column: str) -> float:
    try:
        v = float(s)
    except (TypeError, ValueError):
        raise TraceFormatError(path, line, column, f"expected a number, got {s!r}") from None
    if not np.isfinite(v):
        raise TraceFormatError(path, line, column, f"expected a finite number, got {s!r}")
    return v
