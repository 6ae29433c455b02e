"""wrap_profiler: a clear error without the tool, a working perf command line with it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from loadgen.telemetry.profiling import ProfilerUnavailable, wrap_profiler

ARGV = [sys.executable, "-c", "sum(range(3_000_000))"]


@pytest.mark.parametrize("tool", ["perf", "nsys"])
def test_an_absent_profiler_raises_a_clear_error(tool, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ProfilerUnavailable, match=f"profiler '{tool}' not found on PATH"):
        wrap_profiler(ARGV, tool, tmp_path / "prof")


def test_an_unknown_profiler_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="perf, nsys"):
        wrap_profiler(ARGV, "vtune", tmp_path)


@pytest.mark.skipif(shutil.which("perf") is None, reason="perf is not installed here")
def test_perf_record_wraps_a_command_and_writes_its_profile(tmp_path):
    argv = wrap_profiler(ARGV, "perf", tmp_path / "prof")
    assert argv[1:2] == ["record"] and argv[-len(ARGV):] == ARGV
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0 and "perf_event_paranoid" in r.stderr:
        pytest.skip(f"perf cannot record here: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "prof" / "perf.data").stat().st_size > 0


def test_nsys_command_line_when_present(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nsys").write_text("#!/bin/sh\n")
    (fake / "nsys").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    argv = wrap_profiler(ARGV, "nsys", tmp_path / "prof")
    assert argv[0] == str(fake / "nsys") and argv[1] == "profile" and argv[-len(ARGV):] == ARGV
    assert str(tmp_path / "prof" / "nsys-report") in argv
