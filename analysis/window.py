"""The steady window: which requests count, excluding warm-up and drain.

A request counts when its ``t_intended`` lies in [start_s, end_s] (seconds from t0). The window
is either given (``method="explicit"``), the whole run (``method="all"``), or detected
(``method="detected"``) by this rule, computed from the per-request records (finer than the
1-second timeseries, and available for partial runs too):

1. Occupancy met by each arrival: L_j = #{k : t_sent_k <= t_intended_j < t_done_k}, the number
   of requests in flight when request j is due (failed requests count while they are open).
2. Steady level: L_ss = median of L_j over the middle half of the arrivals (ranks n/4..3n/4),
   which the warm-up ramp and the drain cannot move.
3. Warm-up ends at the first arrival that meets L_j >= L_ss:   start_s = t_intended_j.
4. Drain: arrivals stop at T = max t_intended; a request due later than T - m, where m is the
   median user-visible E2E (t_done - t_intended of ok requests), would finish on a server that
   is no longer being fed:   end_s = T - m.
5. If the detected window keeps fewer than half the requests, or fewer than 10, the whole run
   is used instead and the method says so (``"all (detection kept too few requests)"``).

The chosen window and its method go into the analysis output, so every figure says which
requests it is about.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from analysis.metrics import col


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    method: str
    n_requests: int = 0

    def mask(self, t_intended: np.ndarray) -> np.ndarray:
        """Boolean mask of the requests whose ``t_intended`` lies in the window."""
        t = np.asarray(t_intended, dtype=np.float64)
        return (t >= self.start_s) & (t <= self.end_s)

    @property
    def duration_s(self) -> float:
        return max(self.end_s - self.start_s, 0.0)

    def as_dict(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "method": self.method,
                "n_requests": self.n_requests}


def parse_window(text: str) -> tuple[float | None, float | None]:
    """``"START:END"`` in seconds from t0; either side may be empty (``"5:"``, ``":30"``)."""
    if text.count(":") != 1:
        raise ValueError(f"--window {text!r}: expected START:END in seconds, e.g. 5:60 or 5:")
    a, b = text.split(":")
    try:
        start = float(a) if a.strip() else None
        end = float(b) if b.strip() else None
    except ValueError:
        raise ValueError(f"--window {text!r}: START and END must be numbers of seconds") from None
    if start is not None and end is not None and end <= start:
        raise ValueError(f"--window {text!r}: END must be after START")
    return start, end


def occupancy_at_arrivals(t_intended: np.ndarray, t_sent: np.ndarray,
                          t_done: np.ndarray) -> np.ndarray:
    """L_j: requests in flight (t_sent <= t < t_done) at each request's t_intended."""
    ti = np.asarray(t_intended, dtype=np.float64)
    s = np.asarray(t_sent, dtype=np.float64)
    d = np.asarray(t_done, dtype=np.float64)
    opened = np.isfinite(s)
    starts = np.sort(s[opened])
    ends = np.sort(np.where(np.isfinite(d[opened]), d[opened], np.inf))
    return (np.searchsorted(starts, ti, side="right")
            - np.searchsorted(ends, ti, side="right")).astype(np.int64)


def detect_window(t_intended: np.ndarray, t_sent: np.ndarray, t_done: np.ndarray,
                  ok: np.ndarray) -> Window:
    """The steady window by the rule in the module docstring."""
    ti = np.asarray(t_intended, dtype=np.float64)
    n = int(np.isfinite(ti).sum())
    if n == 0:
        return Window(0.0, 0.0, "all", 0)
    first, last = float(np.nanmin(ti)), float(np.nanmax(ti))
    whole = Window(first, last, "all", n)
    if n < 10 or last <= first:
        return Window(first, last, "all (too few requests to detect a window)", n)
    order = np.argsort(ti, kind="stable")
    occ = occupancy_at_arrivals(ti, t_sent, t_done)[order]
    level = float(np.median(occ[n // 4: max(3 * n // 4, n // 4 + 1)]))
    reached = np.nonzero(occ >= level)[0]
    start = float(ti[order][reached[0]]) if reached.size else first
    e2e = (np.asarray(t_done, dtype=np.float64) - ti)[np.asarray(ok, dtype=bool)]
    e2e = e2e[np.isfinite(e2e)]
    m = float(np.median(e2e)) if e2e.size else 0.0
    end = last - m
    w = Window(start, end, "detected", 0)
    kept = int(w.mask(ti).sum())
    if end <= start or kept < max(10, n // 2):
        return Window(whole.start_s, whole.end_s, "all (detection kept too few requests)", n)
    return Window(start, end, "detected", kept)


def choose_window(requests: pa.Table, window: Window | tuple | str | None = None) -> Window:
    """The window for a run: ``None`` detects it; ``"all"`` takes every request; a
    ``(start, end)`` tuple (either may be None) or ``"START:END"`` string is explicit."""
    ti = col(requests, "t_intended")
    finite = ti[np.isfinite(ti)]
    first = float(finite.min()) if finite.size else 0.0
    last = float(finite.max()) if finite.size else 0.0
    if isinstance(window, Window):
        return Window(window.start_s, window.end_s, window.method, int(window.mask(ti).sum()))
    if window is None:
        status = requests.column("status").to_numpy(zero_copy_only=False)
        return detect_window(ti, col(requests, "t_sent"), col(requests, "t_done"),
                             status == "ok")
    if window == "all":
        return Window(first, last, "all", int(finite.size))
    start, end = parse_window(window) if isinstance(window, str) else window
    w = Window(first if start is None else float(start), last if end is None else float(end),
               "explicit", 0)
    return Window(w.start_s, w.end_s, w.method, int(w.mask(ti).sum()))
