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


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("perf") is None, reason="perf is not installed here")
def test_a_launched_server_runs_under_perf_and_its_info_names_the_profile(tmp_path):
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
    if not perf_data.exists() and "perf_event_paranoid" in srv.process.log_path.read_text():
        pytest.skip("perf cannot record here (perf_event_paranoid)")
    assert prof["files"] == [str(perf_data)] and perf_data.stat().st_size > 0


def test_a_missing_profiler_stops_the_launch_before_any_server_starts(tmp_path, monkeypatch):
    from servers.launch import ServeSettings, launch
    from servers.sim.runtime import SimRuntime

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    s = ServeSettings(model="sim-llm", log_dir=tmp_path / "logs", profile="nsys")
    with pytest.raises(ProfilerUnavailable, match="Nsight Systems"):
        launch(SimRuntime(), s)
    assert not (tmp_path / "logs").exists()  # nothing was started
