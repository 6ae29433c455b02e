"""wrap_profiler: a clear error without the tool, a working perf command line with it.

perf comes from the ``perf_tool`` fixture (tests/conftest.py: apt-get install linux-perf when
missing and root, else skipped with the reason)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.telemetry.profiling import OUTPUT_FILES, ProfilerUnavailable, wrap_profiler

ARGV = [sys.executable, "-c", "sum(range(3_000_000))"]


@pytest.mark.parametrize("tool", ["perf", "nsys"])
def test_an_absent_profiler_raises_a_clear_error(tool, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ProfilerUnavailable, match=f"profiler '{tool}' not found on PATH"):
        wrap_profiler(ARGV, tool, tmp_path / "prof")


def test_an_unknown_profiler_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="perf, nsys"):
        wrap_profiler(ARGV, "vtune", tmp_path)


def test_perf_record_wraps_a_command_and_writes_its_profile(tmp_path, perf_tool):
    argv = wrap_profiler(ARGV, "perf", tmp_path / "prof")
    assert argv[0] == perf_tool and argv[1:2] == ["record"] and argv[-len(ARGV):] == ARGV
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
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
    out = argv[argv.index("-o") + 1]
    assert out == str(tmp_path / "prof" / "nsys-report")
    # nsys appends .nsys-rep to -o: the name the launcher expects (OUTPUT_FILES) and attaches
    assert [Path(out).name + ".nsys-rep"] == list(OUTPUT_FILES["nsys"])
    assert "--trace=cuda,nvtx,osrt" in argv


@pytest.mark.e2e
def test_a_launched_server_runs_under_perf_and_its_info_names_the_profile(tmp_path, perf_tool):
    import urllib.request

    from servers.launch import ServeSettings, launch
    from servers.sim.runtime import SimRuntime

    s = ServeSettings(model="sim-llm", log_dir=tmp_path / "logs", startup_timeout_s=60,
                      profile="perf", profile_dir=tmp_path / "prof")
    srv = launch(SimRuntime(), s)
    try:
        body = b'{"model": "sim-llm", "prompt": "a b c", "max_tokens": 4}'
        req = urllib.request.Request(srv.base_url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        before = srv.info()["profile"]
        assert before["tool"] == "perf" and before["server_argv"][1:3] == ["-m", "servers.sim"]
        assert srv.info()["argv"][1] == "record"  # the server is perf's child
    finally:
        srv.stop()
    prof = srv.info()["profile"]
    perf_data = tmp_path / "prof" / "perf.data"
    assert prof["files"] == [str(perf_data)] and perf_data.stat().st_size > 0
    assert prof["complete"] and not before["complete"]
    done = json.loads((tmp_path / "prof" / "profile.json").read_text())
    assert done["files"] == [{"name": "perf.data", "bytes": perf_data.stat().st_size}]
    assert done["started_unix"] == prof["started_unix"] < done["stopped_unix"]


def test_a_missing_profiler_stops_the_launch_before_any_server_starts(tmp_path, monkeypatch):
    from servers.launch import ServeSettings, launch
    from servers.sim.runtime import SimRuntime

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    s = ServeSettings(model="sim-llm", log_dir=tmp_path / "logs", profile="nsys")
    with pytest.raises(ProfilerUnavailable, match="Nsight Systems"):
        launch(SimRuntime(), s)
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_a_profile_with_its_file_missing_is_recorded_incomplete(tmp_path):
    from loadgen.telemetry.profiling import read_done, write_done

    assert read_done(tmp_path) is None  # no profile.json: the server has not stopped
    done = write_done(tmp_path, "perf", 1.0, 0, ARGV, "server.log")
    assert done == read_done(tmp_path)
    assert not done["complete"] and done["files"] == []
    assert "perf.data missing or empty" in done["reason"] and "server.log" in done["reason"]
