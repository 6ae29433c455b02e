"""The progress line writes to the sys.stderr of when it is made, not of when it was imported."""

from __future__ import annotations

import io
import sys

from loadgen.progress import Progress


def test_progress_uses_the_current_stderr_not_the_one_at_import(monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    first.close()  # e.g. pytest's capsys stream of an earlier test, closed since
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    p = Progress(10, 1.0, enabled=False)
    assert p.stream is now and p.tty is False
