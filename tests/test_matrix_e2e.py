"""`loadgen matrix run` as a real process against real servers on 127.0.0.1: killed with SIGKILL
mid-matrix and restarted, stopped with SIGTERM, one cell failing (a bad model path, a missing
dataset) while the rest complete, and two matrices writing into one store at once.

Loads are bounded: at most 12 requests per rate on the reference server (tiny costs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest

from analysis import catalog
from loadgen.matrix.cells import expand
from loadgen.matrix.spec import load_experiment
from loadgen.matrix.store import Store

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent


def write_matrix(path: Path, name: str, workloads: dict[str, int], rates: str = "[4, 8]",
                 num_prompts: int = 12, extra: str = "", runtimes: str = '["sim"]') -> Path:
    """A sim matrix, batch 4, one synthetic workload per entry (name -> input length)."""
    wl = "".join(f"\n[workloads.{w}]\ninput_len = {n}\nrandom_output_len = 8\n"
                 for w, n in workloads.items())
    path.write_text(f"""\
[experiment]
name = "{name}"

[axes]
runtimes = {runtimes}
models = ["m"]
batch_sizes = [4]
workloads = {orjson.dumps(list(workloads)).decode()}

[load]
rates = {rates}
num_prompts = {num_prompts}
stop_when_saturated = false

[slo]
ttft_p99_ms = 500

[models.m]
{wl}{extra}""")
    return path


def start(file: Path, store: Path, log: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = open(log, "w")  # noqa: SIM115 - closed when the test's process ends
    return subprocess.Popen([sys.executable, "-m", "loadgen", "matrix", "run", str(file),
                             "--store", str(store), *flags],
                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def records(file: Path, store: Path) -> dict[str, dict]:
    """workload name -> cell.json of each cell of ``file``."""
    s = Store(store)
    return {c.axes["workload"]: (s.read_cell(c.id) or {}) | {"_id": c.id}
            for c in expand(load_experiment(file)).cells}


def wait_for(pred, timeout_s: float, what: str) -> None:
    t = time.monotonic() + timeout_s
    while time.monotonic() < t:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killed_with_sigkill_and_restarted_it_skips_complete_cells_and_reruns_the_partial(tmp_path):
    file = write_matrix(tmp_path / "m.toml", "resume", {"w1": 16, "w2": 24, "w3": 32})
    store = tmp_path / "store"
    p = start(file, store, tmp_path / "run1.log", "--no-report")
    try:
        def mid_second_cell() -> bool:
            r = records(file, store)
            run = store / "cells" / r["w2"]["_id"] / "attempt-1" / "rate-4" / "manifest.json"
            return r["w1"].get("status") == "complete" and run.exists()

        wait_for(mid_second_cell, 120, "the second cell's first run to start")
        time.sleep(0.5)
        ledger = list((store / "servers").glob("*.json"))
        server_pid = orjson.loads(ledger[0].read_bytes())["pid"]
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(10) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    r = records(file, store)
    s = Store(store)
    assert s.state(r["w1"]["_id"]) == "complete"
    assert s.state(r["w2"]["_id"]) == "partial"  # "running" in cell.json, nobody holds it
    assert s.state(r["w3"]["_id"]) == "pending"
    wait_for(lambda: not running(server_pid), 15, "the killed matrix's server to exit")
    w1_sweep = store / "cells" / r["w1"]["_id"] / "attempt-1" / "sweep.json"
    stamp = w1_sweep.stat().st_mtime_ns

    p2 = start(file, store, tmp_path / "run2.log", "--no-report")
    assert p2.wait(240) == 0, (tmp_path / "run2.log").read_text()
    log = (tmp_path / "run2.log").read_text()
    r = records(file, store)
    assert "complete earlier: skipped" in log
    assert w1_sweep.stat().st_mtime_ns == stamp and len(r["w1"]["attempts"]) == 1
    assert [a["status"] for a in r["w2"]["attempts"]] == ["partial", "complete"]
    assert r["w2"]["attempt"] == 2 and r["w3"]["status"] == "complete"
    assert (store / "cells" / r["w2"]["_id"] / "attempt-1").is_dir()  # nothing deleted
    _, rows = catalog.query(store, "SELECT cell_id, count(*) FROM latest GROUP BY cell_id")
    assert sorted(n for _, n in rows) == [2, 2, 2]
    _, old = catalog.query(store, "SELECT count(*) FROM runs WHERE current = 0")
    assert old[0][0] >= 1  # the killed attempt's runs are indexed, as not current
    assert list((store / "servers").glob("*.json")) == []


def test_sigterm_records_the_cell_as_interrupted_and_stops_its_server(tmp_path):
    file = write_matrix(tmp_path / "m.toml", "term", {"w1": 16}, rates="[4]", num_prompts=40)
    store = tmp_path / "store"
    p = start(file, store, tmp_path / "run.log", "--no-report")
    try:
        cid = records(file, store)["w1"]["_id"]
        run = store / "cells" / cid / "attempt-1" / "rate-4"
        wait_for(lambda: (run / "manifest.json").exists(), 60, "the run to start")
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 143, (tmp_path / "run.log").read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    rec = records(file, store)["w1"]
    assert rec["status"] == "interrupted" and "SIGTERM" in rec["cause"]
    m = orjson.loads((run / "manifest.json").read_bytes())
    assert (m["status"], m["interrupted_by"]) == ("partial", "SIGTERM")
    assert list((store / "servers").glob("*.json")) == []  # stopped, not orphaned
    assert "interrupted by SIGTERM: run the same command again" in (tmp_path / "run.log").read_text()


@pytest.fixture(scope="module")
def llama_server() -> Path:
    from servers.llamacpp.build import ensure_llama_server

    return ensure_llama_server(progress=lambda m: print(m, flush=True), timeout_s=25 * 60)


def test_a_failing_cell_is_recorded_with_its_cause_and_the_rest_complete(tmp_path, llama_server):
    extra = ('\n[workloads.lost]\ndataset = "alpaca"\npath = "' + str(tmp_path / "missing.json")
             + '"\n\n[runtimes.llamacpp]\nstartup_timeout_s = 60\n')
    file = write_matrix(tmp_path / "m.toml", "fail", {"ok": 16}, rates="[8]", num_prompts=6,
                        runtimes='["sim", "llamacpp"]', extra=extra)
    text = file.read_text().replace('workloads = ["ok"]', 'workloads = ["ok", "lost"]')
    file.write_text(text.replace("[models.m]\n", '[models.m]\nsources = { llamacpp = '
                                 f'"{tmp_path}/no-such-model.gguf" }}\n'))
    store = tmp_path / "store"
    p = start(file, store, tmp_path / "run.log")
    assert p.wait(180) == 1, (tmp_path / "run.log").read_text()
    s = Store(store)
    by = {c.label: s.read_cell(c.id) for c in expand(load_experiment(file)).cells}
    assert by["sim/m/b4/tp1/ok/r0"]["status"] == "complete"
    lost = by["sim/m/b4/tp1/lost/r0"]
    assert lost["status"] == "failed" and "missing.json" in lost["cause"]
    for w in ("ok", "lost"):
        c = by[f"llamacpp/m/b4/tp1/{w}/r0"]
        assert c["status"] == "failed" and c["cause"].startswith("server did not start")
        assert "no-such-model.gguf" in c["cause"]  # the server's own log is quoted
    out = (tmp_path / "run.log").read_text()
    assert "1 complete, 3 failed" in out and "report: " in out
    report = orjson.loads((store / "matrices" / "fail" / "report" / "report.json").read_bytes())
    assert sorted(c["status"] for c in report["cells"]) == ["complete", "failed", "failed",
                                                            "failed"]


def test_two_matrices_share_one_store_and_run_a_common_cell_once(tmp_path):
    a = write_matrix(tmp_path / "a.toml", "mat-a", {"w1": 16, "common": 24}, rates="[8]",
                     num_prompts=8)
    b = write_matrix(tmp_path / "b.toml", "mat-b", {"common": 24, "w3": 32}, rates="[8]",
                     num_prompts=8)
    store = tmp_path / "store"
    pa_ = start(a, store, tmp_path / "a.log", "--no-report")
    pb = start(b, store, tmp_path / "b.log", "--no-report")
    assert pa_.wait(180) == 0, (tmp_path / "a.log").read_text()
    assert pb.wait(180) == 0, (tmp_path / "b.log").read_text()
    ra, rb = records(a, store), records(b, store)
    assert ra["common"]["_id"] == rb["common"]["_id"]  # the same configuration, one cell
    common = Store(store).read_cell(ra["common"]["_id"])
    assert common["status"] == "complete" and len(common["attempts"]) == 1
    assert sorted(common["experiments"]) == ["mat-a", "mat-b"]
    _, rows = catalog.query(store, "SELECT cell_id, count(*) FROM latest GROUP BY cell_id")
    assert sorted(n for _, n in rows) == [1, 1, 1]
