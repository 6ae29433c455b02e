"""A live progress line on stderr, updated from the engine's once-a-second sampler.

Deliberately tiny (no refresh thread competing with the event loop for the GIL): on a terminal
it rewrites one line; otherwise it prints a line every ``every_s`` seconds.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_progress(n: int, started: int, done: int, failed: int, in_flight: int,
                    elapsed: float, planned: float) -> str:
    pct = 100.0 * done / n if n else 100.0
    return (f"[{pct:5.1f}%] sent {started}/{n}  done {done}  failed {failed}  "
            f"in-flight {in_flight}  {elapsed:6.1f}s / {planned:.1f}s planned")


class Progress:
    def __init__(self, n: int, planned_s: float, stream: TextIO | None = None,
                 every_s: float = 10.0, enabled: bool = True) -> None:
        # sys.stderr now, not when this module was imported: it may have been replaced since
        # (and the one of then closed, as pytest's capsys does).
        stream = sys.stderr if stream is None else stream
        self.n, self.planned_s, self.stream, self.every_s = n, planned_s, stream, every_s
        self.enabled = enabled
        self.tty = stream.isatty()
        self._last = 0.0

    def __call__(self, res, now: float) -> None:  # res: EngineResult
        if not self.enabled:
            return
        c = res.counters
        line = format_progress(self.n, c.started, c.done, c.failed, c.in_flight, now, self.planned_s)
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
        elif time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
