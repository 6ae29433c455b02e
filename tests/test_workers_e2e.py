"""Several generator processes (and Ray actors) sharing one schedule, against the real
reference server on 127.0.0.1. Every load is bounded in count and time; nothing here is timed
beyond what the single-process tests already assume."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import psutil
import pyarrow.parquet as pq
import pytest

from analysis.histograms import decode
from analysis.load import load_run
from arrivals.workload import synthetic_workload
from loadgen.clients.openai import ClientConfig
from loadgen.run import RunSpec, execute
from loadgen.stream_table import segments

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent


def _spec(url: str, wl, tmp: Path, name: str, **kw) -> RunSpec:
    return RunSpec(client=ClientConfig(base_url=url, model="sim-llm"), workload=wl,
                   result_dir=tmp, run_name=name, progress=False, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _by_id(run) -> dict[str, list]:
    t = run.requests.sort_by("request_id")
    return {c: t.column(c).to_pylist() for c in
            ("request_id", "worker", "t_intended", "status", "output_tokens", "input_tokens", "n_chunks")}


def test_two_workers_report_what_one_process_reports_for_a_slow_rate(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "2")
    wl = synthetic_workload(num_requests=40, request_rate=20.0, process="constant",
                            input_len=12, output_len=6, seed=7)
    # max_send_lag_ms 50: this compares what is recorded, not send precision on a busy machine
    one = execute(_spec(srv.base_url, wl, tmp_path, "one", max_send_lag_ms=50.0))
    two = execute(_spec(srv.base_url, wl, tmp_path, "two", workers=2, max_send_lag_ms=50.0))
    assert one.exit_code == 0 and two.exit_code == 0, two.text
    a, b = _by_id(load_run(one.run_dir)), _by_id(load_run(two.run_dir))
    assert b["request_id"] == list(range(40))  # every request once, with its global id
    for c in ("request_id", "t_intended", "status", "output_tokens", "input_tokens", "n_chunks"):
        assert a[c] == b[c], c
    assert set(a["worker"]) == {0}
    assert b["worker"] == [i % 2 for i in range(40)]  # round-robin by request index
    s1, s2 = one.summary, two.summary
    assert s1["counts"] == s2["counts"] and s1["tokens"] == s2["tokens"]
    assert s2["self_check"]["workers"] == 2
    assert {w: v["count"] for w, v in s2["self_check"]["send_lag_ms_by_worker"].items()} == {"0": 20, "1": 20}
    assert list(s1["self_check"]["send_lag_ms_by_worker"]) == ["0"]
    assert set(s2["validity"]["send_lag_p99_ms_by_worker"]) == {"0", "1"}


def test_workers_histograms_add_up_to_the_runs_latency(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "2")
    wl = synthetic_workload(num_requests=30, request_rate=20.0, input_len=12, output_len=6, seed=8)
    res = execute(_spec(srv.base_url, wl, tmp_path, "hist", workers=2))
    gen = orjson.loads((res.run_dir / "manifest.json").read_bytes())["generator"]
    assert [w["recorded"] for w in gen["workers"]] == [15, 15]
    assert not (res.run_dir / "workers").exists()  # per-worker files merged and removed
    ttft = decode(gen["histograms"]["ttft"])  # the workers' encoded histograms, added
    lat = res.summary["latency_ms"]["from_sent"]["ttft"]  # computed from the merged records
    assert ttft.get_total_count() == lat["count"] == 30
    assert ttft.get_value_at_percentile(50) / 1e3 == lat["p50"]
    assert ttft.get_value_at_percentile(99) / 1e3 == lat["p99"]
    assert gen["cpu_s"] == pytest.approx(sum(w["cpu_s"] for w in gen["workers"]))


def test_ctrl_c_stops_every_worker_and_saves_a_partial_run(start_sim, tmp_path):
    # 20 ms per decode step x 40 tokens: each request streams for about a second, so some are
    # in flight when Ctrl-C comes (the terminal sends SIGINT to the whole process group).
    srv = start_sim("--step-base-ms", "20")
    run_dir = tmp_path / "cc"
    cmd = [sys.executable, "-m", "loadgen", "run", "--base-url", srv.base_url, "--model", "sim-llm",
           "--request-rate", "10", "--num-prompts", "100", "--random-input-len", "8",
           "--random-output-len", "40", "--seed", "3", "--workers", "2", "--no-progress",
           "--no-telemetry", "--result-dir", str(tmp_path), "--run-name", "cc"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        # the workers' record streams appear when they start their engines (just before t0)
        while not all(segments(run_dir / "workers" / f"w{k}.parquet") for k in (0, 1)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(2.0)  # about 20 requests sent, several in flight
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err.decode()[-2000:]
    m = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert m["status"] == "partial" and m["interrupted_by"] == "SIGINT"
    t = pq.read_table(run_dir / "requests.parquet")
    ids = t.column("request_id").to_pylist()
    assert 5 <= len(ids) < 100 and len(set(ids)) == len(ids)
    assert set(t.column("worker").to_pylist()) == {0, 1}
    assert "cancelled" in t.column("status").to_pylist()  # in-flight requests at Ctrl-C
    s = orjson.loads((run_dir / "summary.json").read_bytes())
    assert s["validity"]["verdict"] == "PARTIAL"
    for w in m["generator"]["workers"]:
        assert w["interrupted"]
        assert not psutil.pid_exists(w["pid"]) or psutil.Process(w["pid"]).status() == psutil.STATUS_ZOMBIE


def test_a_local_ray_cluster_run_produces_one_valid_run_directory(start_sim, tmp_path):
    import ray  # the [test] extra installs it (pyproject.toml)

    assert not ray.is_initialized()
    srv = start_sim("--step-base-ms", "2")
    wl = synthetic_workload(num_requests=30, request_rate=15.0, process="constant",
                            input_len=12, output_len=6, seed=9)
    # max_send_lag_ms 50: this checks the run directory, not timing precision on a shared
    # 2-core machine that also runs Ray's own processes
    res = execute(_spec(srv.base_url, wl, tmp_path, "ray", workers=2, ray="local",
                        max_send_lag_ms=50.0))
    assert res.exit_code == 0, res.text
    assert not ray.is_initialized()  # the cluster this run started is shut down
    run = load_run(res.run_dir)
    assert sorted(res.run_dir.iterdir()) == sorted(
        res.run_dir / f for f in ("manifest.json", "requests.parquet", "summary.json",
                                  "summary.txt", "timeseries.parquet"))
    ids = run.requests.column("request_id").to_pylist()
    assert ids == list(range(30))
    assert set(run.requests.column("status").to_pylist()) == {"ok"}
    assert run.manifest["status"] == "complete" and run.manifest["config"]["workers"]["mode"] == "ray"
    clocks = run.manifest["config"]["workers"]["per_worker_clock"]
    assert len(clocks) == 2 and all(abs(c["offset_s"]) <= c["error_bound_s"] + 0.005 for c in clocks)
    assert set(res.summary["self_check"]["send_lag_ms_by_worker"]) == {"0", "1"}
    assert np.isfinite(res.summary["latency_ms"]["from_sent"]["ttft"]["p50"])


def test_a_worker_that_fails_before_t0_fails_the_run_with_its_error(tmp_path):
    from dataclasses import replace

    from loadgen.workers import WorkerError

    # prompts that are bytes, not text: orjson cannot encode them, so every worker's
    # prepare() raises before t0
    good = synthetic_workload(num_requests=10, request_rate=5.0, seed=1)
    wl = replace(good, prompts=[p.encode() for p in good.prompts])
    spec = RunSpec(client=ClientConfig(base_url="http://127.0.0.1:9", model="m"), workload=wl,
                   result_dir=tmp_path, run_name="bad", progress=False, do_preflight=False,
                   workers=2)
    with pytest.raises(WorkerError, match="^worker 0 failed: TypeError: Type is not JSON "
                       "serializable: bytes; worker 1 failed: TypeError"):
        execute(spec)
    m = orjson.loads((tmp_path / "bad" / "manifest.json").read_bytes())
    assert m["status"] == "failed" and "worker 1 failed" in m["failure"]


def test_sessions_stay_in_one_worker_and_keep_their_turn_order(start_sim, tmp_path):
    from arrivals.plan import read_plan
    from tests.test_sessions import sharegpt_file

    srv = start_sim("--step-base-ms", "1")
    plan = tmp_path / "p.jsonl"
    subprocess.run([sys.executable, "-m", "loadgen", "plan", "--dataset-name", "sharegpt",
                    "--dataset-path", str(sharegpt_file(tmp_path)), "--dataset-sessions",
                    "--think-time", "0.1", "--request-rate", "5", "--output-len", "4",
                    "--seed", "2", "-o", str(plan)], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    wl = read_plan(plan)
    res = execute(_spec(srv.base_url, wl, tmp_path, "s2", workers=2, max_send_lag_ms=50.0))
    assert res.exit_code == 0, res.text
    rows = load_run(res.run_dir).requests.sort_by("request_id").to_pylist()
    assert [r["request_id"] for r in rows] == list(range(len(wl))) and len(rows) == 6
    assert all(r["status"] == "ok" for r in rows)
    by_session: dict[str, list[dict]] = {}
    for r in rows:
        by_session.setdefault(r["session_id"], []).append(r)
    assert len(by_session) == 3 and {r["worker"] for r in rows} == {0, 1}
    for turns in by_session.values():
        assert len({r["worker"] for r in turns}) == 1  # a session never changes worker
        turns.sort(key=lambda r: r["turn"])
        assert [r["turn"] for r in turns] == list(range(len(turns)))
        for prev, nxt in zip(turns, turns[1:], strict=False):
            assert nxt["t_sent"] >= prev["t_done"] + 0.1 - 0.002  # a think time after its end


def test_a_killed_worker_is_named_and_its_streamed_records_are_kept(start_sim, tmp_path):
    # SIGKILL of one worker mid-run: the other finishes its share; the dead one's crash-safe
    # record stream (loadgen/stream_table.py) is salvaged up to its last flush
    srv = start_sim("--step-base-ms", "2")
    run_dir = tmp_path / "kw"
    cmd = [sys.executable, "-m", "loadgen", "run", "--base-url", srv.base_url, "--model", "sim-llm",
           "--request-rate", "20", "--num-prompts", "120", "--random-input-len", "8",
           "--random-output-len", "4", "--seed", "4", "--workers", "2", "--no-progress",
           "--no-telemetry", "--result-dir", str(tmp_path), "--run-name", "kw"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not all(segments(run_dir / "workers" / f"w{k}.parquet") for k in (0, 1)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(2.5)  # worker 0 has streamed at least one batch (one a second)
        ws = [c for c in psutil.Process(proc.pid).children()
              if "loadgen.worker_process" in " ".join(c.cmdline())]
        assert len(ws) == 2
        ws[0].kill()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err.decode()[-2000:]  # INVALID: not every request recorded
    m = orjson.loads((run_dir / "manifest.json").read_bytes())
    gen = m["generator"]
    assert m["status"] == "partial" and len(gen["workers_failed"]) == 1
    k = int(next(iter(gen["workers_failed"])))  # the killed one
    assert f"worker {k} exited" in gen["workers_failed"][str(k)]
    salvaged = gen["salvaged_records"][str(run_dir / "workers" / f"w{k}.parquet")]
    t = pq.read_table(run_dir / "requests.parquet")
    workers = t.column("worker").to_pylist()
    ids = t.column("request_id").to_pylist()
    assert salvaged >= 10 and workers.count(k) == salvaged  # its flushed records
    assert workers.count(1 - k) == 60  # the other one finished its share
    assert len(set(ids)) == len(ids) and all(i % 2 == w for i, w in zip(ids, workers, strict=True))


def _workers_of(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children()
            if "loadgen.worker_process" in " ".join(c.cmdline())]


def _gone(procs: list[psutil.Process], timeout: float) -> bool:
    """Every process exited (a zombie nobody reaped counts as exited) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_a_killed_parent_takes_its_workers_and_summary_recovers_the_run(start_sim, tmp_path):
    # SIGKILL of the parent only (not its group: the workers are in their own group anyway)
    # while 20 ms x 40-token streams are in flight
    srv = start_sim("--step-base-ms", "20")
    run_dir = tmp_path / "kp"
    cmd = [sys.executable, "-m", "loadgen", "run", "--base-url", srv.base_url, "--model", "sim-llm",
           "--request-rate", "10", "--num-prompts", "200", "--random-input-len", "8",
           "--random-output-len", "40", "--seed", "5", "--workers", "2", "--no-progress",
           "--result-dir", str(tmp_path), "--run-name", "kp"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not all(segments(run_dir / "workers" / f"w{k}.parquet") for k in (0, 1)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(2.5)  # about 25 requests sent, several streaming
        workers = _workers_of(proc.pid)
        assert len(workers) == 2
        proc.kill()
        proc.communicate(timeout=30)
        assert _gone(workers, timeout=30), [w.pid for w in workers]  # no orphan sends load
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    m = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert m["status"] == "running" and not (run_dir / "requests.parquet").exists()
    p = subprocess.run([sys.executable, "-m", "loadgen", "summary", str(run_dir), "--json"],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=60)
    s = orjson.loads(p.stdout)
    assert s["validity"]["verdict"] == "PARTIAL" and s["status"] == "partial", p.stderr
    m = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert m["interrupted_by"] == "killed"
    note = m["recovery"]["workers"]
    assert note["merged_from"] == ["w0.parquet", "w1.parquet"]
    t = pq.read_table(run_dir / "requests.parquet")
    ids, workers = t.column("request_id").to_pylist(), t.column("worker").to_pylist()
    assert 10 <= len(ids) < 200 and ids == sorted(set(ids))
    assert set(workers) == {0, 1} and all(i % 2 == w for i, w in zip(ids, workers, strict=True))
    assert note["rows_by_worker"] == {"0": workers.count(0), "1": workers.count(1)}
    # the workers stopped on the parent's death: their in-flight requests were cancelled
    assert "cancelled" in t.column("status").to_pylist()
    assert s["counts"]["recorded"] == len(ids)
    ts = pq.read_table(run_dir / "timeseries.parquet")
    assert ts.num_rows >= 2 and max(ts.column("sent").to_pylist()) <= len(ids)
    assert not (run_dir / "workers").exists()


def _scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_two_workers_feed_the_parents_live_endpoint_up_to_the_runs_totals(start_sim, tmp_path,
                                                                           monkeypatch):
    import loadgen.workers as workers_mod
    from loadgen.telemetry.session import TelemetryOptions

    srv = start_sim("--step-base-ms", "2")
    n = 60
    wl = synthetic_workload(num_requests=n, request_rate=20.0, process="constant",
                            input_len=8, output_len=6, seed=11)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    during: list[dict[str, float]] = []
    at_end: list[dict[str, float]] = []
    stop = threading.Event()

    def poll() -> None:  # a Prometheus server scraping during the run
        while not stop.is_set():
            with contextlib.suppress(OSError):
                during.append(_scrape(url))
            time.sleep(0.05)

    real_finish = workers_mod.finish_workers

    def finish_then(*a, **kw):  # every worker has reported: scrape once more, then merge
        at_end.append(_scrape(url))
        return real_finish(*a, **kw)

    monkeypatch.setattr(workers_mod, "finish_workers", finish_then)
    tel = TelemetryOptions(sample=False, metrics_port=port)
    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        res = execute(_spec(srv.base_url, wl, tmp_path, "live2", workers=2, telemetry=tel,
                            max_send_lag_ms=50.0))
    finally:
        stop.set()
        th.join(5)
    assert res.exit_code == 0, res.text
    sent = [m["loadgen_requests_sent_total"] for m in during]
    assert sent == sorted(sent) and any(0 < v < n for v in sent)  # it showed the run going
    end = at_end[0]
    assert end["loadgen_requests_sent_total"] == end["loadgen_requests_started_total"] == n
    assert end["loadgen_requests_done_total{status=ok}"] == n
    assert end["loadgen_requests_in_flight"] == 0
    assert end["loadgen_ttft_seconds_count"] == end["loadgen_e2e_seconds_count"] == n
    assert end["loadgen_send_lag_seconds_count"] == n
    lm = orjson.loads((res.run_dir / "manifest.json").read_bytes())["telemetry"]["live_metrics"]
    assert lm["requests_drained"] == n and lm["final"]["loadgen_requests_done_total"] == n


def test_the_sampler_counts_every_worker_process_as_the_generator(start_sim, tmp_path):
    from loadgen.telemetry.session import TelemetryOptions

    srv = start_sim("--step-base-ms", "1")
    wl = synthetic_workload(num_requests=300, request_rate=100.0, input_len=8, output_len=4,
                            seed=12)
    tel = TelemetryOptions(sample_interval_s=0.1, gpus=False)
    res = execute(_spec(srv.base_url, wl, tmp_path, "cpu2", workers=2, telemetry=tel,
                        max_send_lag_ms=1e3))
    m = orjson.loads((res.run_dir / "manifest.json").read_bytes())
    per_worker = [w["cpu_s"] for w in m["generator"]["workers"]]
    assert min(per_worker) > 0.05  # both busy
    t = pq.read_table(res.run_dir / "telemetry.parquet")
    assert max(t.column("gen_processes").to_pylist()) == 3  # the parent and two workers
    # from the first sample after t0 (the workers' imports and preparation excluded) to the
    # last (after the workers exited: their CPU is in the parent's reaped-children account),
    # the sampled generator CPU covers both workers' engines, not one process's
    cpu = t.column("gen_cpu_s_total").to_numpy()[t.column("t").to_numpy() >= 0]
    assert cpu[-1] - cpu[0] >= 0.8 * sum(per_worker) > max(per_worker)
    assert m["telemetry"]["sampler"]["generator_pids"] == [
        os.getpid(), *(w["pid"] for w in m["generator"]["workers"])]


def test_ctrl_c_of_a_ray_run_stops_its_actors_and_saves_a_partial_run(start_sim, tmp_path):
    pytest.importorskip("ray")  # the [test] extra installs it (pyproject.toml)
    srv = start_sim("--step-base-ms", "20")  # 40 tokens: about a second a request
    run_dir = tmp_path / "rc"
    cmd = [sys.executable, "-m", "loadgen", "run", "--base-url", srv.base_url, "--model", "sim-llm",
           "--request-rate", "10", "--num-prompts", "200", "--random-input-len", "8",
           "--random-output-len", "40", "--seed", "6", "--workers", "2", "--ray", "local",
           "--no-progress", "--no-telemetry", "--result-dir", str(tmp_path), "--run-name", "rc"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    actors: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120  # Ray's own start-up takes most of it
        while len(actors) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
            actors = []
            for p in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "LoadWorker.run" in " ".join(p.cmdline()):  # Ray's title of a busy actor
                        actors.append(p)
        time.sleep(3.0)  # past the common start (>= 1 s margin): requests in flight
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err.decode()[-2000:]
    assert _gone(actors, timeout=30), [a.pid for a in actors]  # the actors are stopped
    m = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert m["status"] == "partial" and m["interrupted_by"] == "SIGINT"
    assert m["config"]["workers"]["mode"] == "ray"
    assert [w["interrupted"] for w in m["generator"]["workers"]] == [True, True]
    t = pq.read_table(run_dir / "requests.parquet")
    ids = t.column("request_id").to_pylist()
    assert 5 <= len(ids) < 200 and len(set(ids)) == len(ids)
    assert set(t.column("worker").to_pylist()) == {0, 1}
    assert "cancelled" in t.column("status").to_pylist()  # in flight at Ctrl-C
    assert orjson.loads((run_dir / "summary.json").read_bytes())["validity"]["verdict"] == "PARTIAL"
