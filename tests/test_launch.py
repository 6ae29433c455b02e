"""The common server lifecycle, exercised with the reference simulator as the runtime."""

from __future__ import annotations

import socket
import sys
import urllib.request

import pytest

from servers.launch import ServeSettings, launch, pick_port
from servers.process import ServerStartError
from servers.sim.runtime import SimRuntime


def test_launch_picks_a_port_waits_for_the_model_and_describes_the_server(tmp_path):
    s = ServeSettings(model="tiny", max_batch_size=4, log_dir=tmp_path, extra_args=("--seed", "3"))
    with launch(SimRuntime(), s) as srv:
        info = srv.info()
        pid = srv.process.proc.pid
        with urllib.request.urlopen(srv.base_url + "/version", timeout=5) as r:
            assert b'"max_batch":4' in r.read().replace(b" ", b"")
    assert info["runtime"] == "sim" and info["model"] == "tiny"
    assert info["argv"][-2:] == ["--seed", "3"] and "--max-batch-size" in info["argv"]
    assert info["settings"]["max_batch_size"] == 4 and info["startup_s"] > 0
    assert srv.process.proc.poll() is not None  # stopped on exit
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


def test_a_server_that_dies_at_start_quotes_its_log(tmp_path):
    class Broken(SimRuntime):
        name = "broken"

        def command(self, s, port):
            return [sys.executable, "-c", "import sys; print('bad flag --frobnicate'); sys.exit(3)"]

    with pytest.raises(ServerStartError, match="(?s)exited with code 3.*bad flag --frobnicate"):
        launch(Broken(), ServeSettings(model="m", log_dir=tmp_path, startup_timeout_s=20))


def test_another_process_on_the_port_is_not_taken_for_our_server(tmp_path):
    # Our sim serving model "other" already holds the port; a launch that expects model "mine"
    # on that port must not accept it.
    port = pick_port()
    with launch(SimRuntime(), ServeSettings(model="other", port=port, log_dir=tmp_path)):
        with pytest.raises(ServerStartError):
            launch(SimRuntime(), ServeSettings(model="mine", port=port, log_dir=tmp_path,
                                               startup_timeout_s=5))


def test_pick_port_returns_a_bindable_port():
    p = pick_port()
    assert 1024 <= p <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))
        assert s.getsockname() == ("127.0.0.1", p)


# A leader that exits at once on SIGTERM, with a child (same process group) that takes CHILD_S
# to exit after SIGTERM, or ignores it: like vLLM's API server and its engine-core processes.
GROUP_SERVER = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import signal, sys, time
mode = sys.argv[1]
if mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: (time.sleep(float(mode)), sys.exit(0)))
print("child ready", flush=True)
time.sleep(120)
''', sys.argv[1]])
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
time.sleep(120)
"""


@pytest.mark.parametrize("child", ["1.0", "ignore"])
def test_stop_returns_only_when_the_whole_process_group_is_gone(tmp_path, child):
    import os
    import time

    from servers.process import ServerProcess

    proc = ServerProcess(argv=[sys.executable, "-c", GROUP_SERVER, child],
                         log_path=tmp_path / "group.log", base_url="http://unused")
    proc.start(timeout_s=30, ready=lambda: b"child ready" in (tmp_path / "group.log").read_bytes())
    t = time.monotonic()
    assert proc.stop(timeout_s=3.0) == 0  # the leader's own exit code
    assert time.monotonic() - t >= 0.9  # waited for the child (1 s), or killed it at 3 s
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.proc.pid, 0)
