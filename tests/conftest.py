"""Shared fixtures: real reference servers on 127.0.0.1, started and stopped by the tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from servers.process import ServerProcess, sim_server  # noqa: E402

try:  # fuzz tests (hypothesis): the same examples on every run, so CI is reproducible;
    # LOADGEN_FUZZ_RANDOM=1 explores new ones (and keeps failures in .hypothesis/).
    import os

    from hypothesis import settings as _hyp_settings

    _hyp_settings.register_profile("repeatable", derandomize=True, database=None)
    if not os.environ.get("LOADGEN_FUZZ_RANDOM"):
        _hyp_settings.load_profile("repeatable")
except ImportError:
    pass


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator:
    """``start_sim(*flags)`` starts ``python -m servers.sim --port 0 FLAGS`` and returns it;
    every server started is stopped (its process group) at the end of the test."""
    started: list[ServerProcess] = []

    def start(*flags: str) -> ServerProcess:
        srv = sim_server(tmp_path / f"sim{len(started)}.log", *flags).start(timeout_s=30)
        started.append(srv)
        return srv

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator:
    """``start_proxy(upstream_url, *flags)`` starts the fault proxy (servers/faultproxy) on a
    free port in front of ``upstream_url`` and returns it; stopped at the end of the test."""
    import socket

    started: list[ServerProcess] = []

    def start(upstream: str, *flags: str) -> ServerProcess:
        argv = [sys.executable, "-m", "servers.faultproxy", "--upstream", upstream, "--port", "0",
                *flags]
        srv = ServerProcess(argv=argv, log_path=tmp_path / f"proxy{len(started)}.log",
                            env={"PYTHONUNBUFFERED": "1"})

        def listening() -> bool:  # not /health: the proxy may fault that request too
            from urllib.parse import urlsplit

            u = urlsplit(srv.base_url)
            with socket.socket() as s:
                return s.connect_ex((u.hostname, u.port)) == 0

        started.append(srv.start(timeout_s=30, ready=listening))
        return srv

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def perf_tool() -> str:
    """``perf``, able to record here: installed with apt-get (Debian's linux-perf) when it is
    missing and we are root; otherwise the test is skipped, saying why."""
    import os
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which("perf")
    if exe is None:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("perf is not installed and cannot be installed here (needs root and "
                        "apt-get): apt-get install linux-perf")
        try:
            subprocess.run("apt-get update -qq && apt-get install -y -qq linux-perf", shell=True,
                           check=True, timeout=600, capture_output=True)
        except (subprocess.SubprocessError, OSError) as e:
            pytest.skip(f"could not install linux-perf with apt-get: {e}")
        exe = shutil.which("perf")
        if exe is None:
            pytest.skip("apt-get installed linux-perf but perf is not on PATH")
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([exe, "record", "-o", f"{d}/p.data", "--", "true"],
                           capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.skip(f"perf cannot record here (see /proc/sys/kernel/perf_event_paranoid): "
                    f"{r.stderr.strip()[-300:]}")
    return exe


@pytest.fixture(scope="session")
def shown_install(request):
    """``shown_install(label, ensure, **kwargs)``: run an installer or build
    (``ensure(progress=..., **kwargs)``: servers' ensure_* functions) with its progress on the
    terminal, pytest's capture off (a first build takes minutes), and say how long it took;
    returns what ``ensure`` returns."""
    import time

    capman = request.config.pluginmanager.getplugin("capturemanager")

    def run(label: str, ensure, **kwargs):  # noqa: ANN001, ANN202
        with capman.global_and_fixture_disabled():
            t = time.monotonic()
            out = ensure(progress=lambda line: print(line, flush=True), **kwargs)
            print(f"\n{label}: {out} (ready after {time.monotonic() - t:.1f} s)", flush=True)
        return out

    return run
