"""The resource sampler against processes with known CPU use."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from loadgen.telemetry.sampler import Sampler, read_proc, read_tree

# Burns exactly 1.0 s of its own CPU (process_time), then idles: on a busy machine it takes
# longer in wall time but its CPU use is still 1.0 s.
# It starts when told to (a line on stdin), after the sampler's first sample.
BUSY = ("import time,sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
        "t=time.process_time()\nwhile time.process_time()-t<1.0: pass\n"
        "print('done', flush=True)\ntime.sleep(30)\n")


def test_server_tree_cpu_seconds_match_a_known_busy_loop():
    # The busy loop runs in a grandchild (sh -> python): the tree must include it.
    sh = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "$0"; exit 0', BUSY],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sh.stdout.readline().strip() == "ready"
        s = Sampler(interval_s=0.1, server_pid=sh.pid, gpus=False).start()
        deadline = time.monotonic() + 10
        while not s.rows and time.monotonic() < deadline:
            time.sleep(0.01)
        sh.stdin.write("go\n")
        sh.stdin.flush()
        assert sh.stdout.readline().strip() == "done"
        time.sleep(0.25)
        s.stop()
    finally:
        for c in psutil.Process(sh.pid).children(recursive=True):  # our own grandchild
            c.kill()
        sh.kill()
        sh.wait(5)
    t = s.table(t0=s.rows[0]["t_mono"])
    cpu = np.asarray(t.column("server_cpu_s_total").to_numpy())
    used = np.nanmax(cpu) - cpu[0]
    # 1.0 s burnt after the first sample; /proc counts in 10 ms jiffies.
    assert 0.95 <= used <= 1.1, used
    assert np.nanmax(t.column("server_processes").to_numpy()) == 2


def test_sampler_measures_its_own_cost_and_aligns_to_t0():
    s = Sampler(interval_s=0.05, gpus=False).start()
    time.sleep(0.4)
    s.stop()
    t0 = s.rows[0]["t_mono"] + 0.1
    tab = s.table(t0)
    t = tab.column("t").to_numpy()
    assert abs(t[0] + 0.1) < 1e-9 and np.all(np.diff(t) > 0)
    own = tab.column("sampler_cpu_s_total").to_numpy()
    assert np.all(np.diff(own) >= 0) and own[-1] > 0
    summ = s.summary()
    assert summ["samples"] == tab.num_rows >= 5
    assert summ["mean_sample_ms"] < 50
    assert "host_cpu0_busy" in tab.column_names
    busy = tab.column("host_cpu_busy").to_numpy()
    assert np.all((busy[1:] >= 0) & (busy[1:] <= 1))


def test_gpu_and_server_absence_is_recorded_with_a_reason():
    s = Sampler(interval_s=0.05).start()
    time.sleep(0.1)
    s.stop()
    summ = s.summary()
    assert summ["server"] == {"unavailable": "no --server-pid"}
    assert summ["gpu"] == "sampled via NVML" or summ["gpu"]["unavailable"]


def test_read_proc_of_self_and_of_a_dead_pid():
    me = read_proc()
    assert me is not None and me["cpu_s_total"] > 0 and me["rss_bytes"] > 1 << 20
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert read_proc(p.pid) is None and read_tree(p.pid) is None


def test_a_generator_group_keeps_the_cpu_of_a_worker_that_has_exited():
    import os

    from loadgen.telemetry.sampler import ProcessGroup, read_reaped

    # a "worker" that burns 0.3 s of CPU once told to, then exits
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\n"
    w = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()\n" + burn],
                         stdin=subprocess.PIPE, text=True)
    g = ProcessGroup(os.getpid(), [w.pid])
    first = g.read()
    assert first["processes"] == 2
    w.stdin.write("go\n")
    w.stdin.close()
    w.wait(30)  # reaped: its /proc entry is gone, its CPU is in our children's account
    after = g.read()
    assert after["processes"] == 1
    mine = read_proc()["cpu_s_total"] + read_reaped()["cpu_s_total"]
    assert after["cpu_s_total"] == pytest.approx(mine, abs=0.02)
    # its 0.3 s burned after the first reading are in the sum (jiffies: 10 ms steps)
    assert after["cpu_s_total"] - first["cpu_s_total"] >= 0.3 - 0.02
    assert after["rss_bytes"] == pytest.approx(read_proc()["rss_bytes"], rel=0.05)
