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
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))
