"""Multi-turn sessions sent by ``loadgen run`` to the reference server: order, think times,
growing history, failures, trace sessions, and the summary's session section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.load import load_run
from arrivals.plan import read_plan
from tests.test_sessions import BURST8, sharegpt_file

pytestmark = pytest.mark.e2e

THINK = 0.2


def _run(tmp_path: Path, srv, name: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--base-url", srv.base_url, "--model",
         "sim-llm", "--result-dir", str(tmp_path), "--run-name", name, "--no-progress", *flags],
        capture_output=True, text=True, timeout=90)


def _rows(run_dir: Path) -> list[dict]:
    t = load_run(run_dir).requests.sort_by("request_id")
    return t.select(["request_id", "session_id", "turn", "t_intended", "t_sent", "t_done",
                     "status", "input_tokens", "expected_input_tokens"]).to_pylist()


def _by_session(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["session_id"], []).append(r)
    return {k: sorted(v, key=lambda r: r["turn"]) for k, v in out.items()}


def test_each_turn_goes_out_a_think_time_after_the_previous_response_ends(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "1")
    plan = tmp_path / "p.jsonl"
    subprocess.run([sys.executable, "-m", "loadgen", "plan", "--dataset-name", "sharegpt",
                    "--dataset-path", str(sharegpt_file(tmp_path)), "--dataset-sessions",
                    "--think-time", str(THINK), "--request-rate", "5", "--output-len", "4",
                    "--seed", "2", "-o", str(plan)], check=True, timeout=60)
    p = _run(tmp_path, srv, "s", "--plan", str(plan))
    assert p.returncode == 0, p.stderr + p.stdout
    rows = _rows(tmp_path / "s")
    wl = read_plan(plan)
    assert len(rows) == len(wl) == 6 and all(r["status"] == "ok" for r in rows)
    firsts = [r for r in rows if r["turn"] == 0]
    # first turns keep the planned (open-loop) schedule
    assert np.allclose([r["t_intended"] for r in firsts],
                       wl.t_intended[wl.sessions.turn == 0], atol=1e-9)
    for turns in _by_session(rows).values():
        assert [r["turn"] for r in turns] == list(range(len(turns)))
        for a, b in zip(turns, turns[1:], strict=False):
            assert abs(b["t_intended"] - (a["t_done"] + THINK)) < 1e-6  # intended = end + think
            gap = b["t_sent"] - a["t_done"]
            assert THINK - 1e-4 <= gap < THINK + 0.05  # sent on time (50 ms: a loaded box)
            assert b["input_tokens"] > a["input_tokens"]  # the history grows
            assert b["input_tokens"] == b["expected_input_tokens"]  # the sim counts words
    s = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert s["sessions"]["sessions"] == 3 and s["sessions"]["follow_up_turns_recorded"] == 3
    assert abs(s["sessions"]["think_ms_intended"]["mean"] - THINK * 1e3) < 0.5
    assert s["self_check"]["interarrival_ks"]["n"] == 2  # gaps of the 3 first turns only
    assert s["counts"]["intended"] == s["counts"]["sent"] == 6


def test_a_failed_turn_does_not_end_its_session(start_sim, tmp_path):
    srv = start_sim("--fault-rate", "1", "--fault-kind", "http500")
    p = _run(tmp_path, srv, "f", "--skip-preflight", "--dataset-name", "sharegpt",
             "--dataset-path", str(sharegpt_file(tmp_path)), "--dataset-sessions",
             "--think-time", "0.05", "--request-rate", "20", "--output-len", "4")
    assert p.returncode == 0, p.stderr + p.stdout  # failures are the server's, not invalid
    rows = _rows(tmp_path / "f")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"http_error"}
    for turns in _by_session(rows).values():
        for a, b in zip(turns, turns[1:], strict=False):
            assert abs(b["t_intended"] - (a["t_done"] + 0.05)) < 1e-6
    s = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert s["sessions"]["turns_after_a_failed_turn"] == 3


def test_trace_sessions_replay_the_traces_think_times(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "1")
    p = _run(tmp_path, srv, "t", "--trace", str(BURST8), "--trace-format", "burstgpt",
             "--trace-sessions", "--trace-speedup", "1000", "--ignore-eos",
             "--random-output-len", "4")
    assert p.returncode == 0, p.stderr + p.stdout
    by = _by_session(_rows(tmp_path / "t"))
    assert sorted(by) == ["s0", "s1"] and [len(by["s0"]), len(by["s1"])] == [3, 2]
    want = {"s0": [0.1115, 0.0925], "s1": [0.1375]}  # (gap - elapsed) / 1000
    for sid, turns in by.items():
        gaps = [b["t_sent"] - a["t_done"] for a, b in zip(turns, turns[1:], strict=False)]
        assert np.all(np.array(gaps) >= np.array(want[sid]) - 1e-4)
        assert np.all(np.array(gaps) < np.array(want[sid]) + 0.05)
    assert abs(by["s1"][0]["t_intended"] - by["s0"][0]["t_intended"] - 0.040) < 1e-9
    m = load_run(tmp_path / "t").manifest
    assert m["workload"]["kind"] == "trace_sessions"
    assert m["workload"]["sessions"]["follow_up_turns"] == 3


def test_cancelling_the_run_stops_sessions_and_records_no_unsent_turn(start_sim, tmp_path):
    import asyncio

    from arrivals.conversations import dataset_session_workload
    from arrivals.datasets.sharegpt import read_sharegpt_conversations
    from arrivals.think import parse_think_time
    from loadgen.clients.openai import ClientConfig
    from loadgen.engine import run_engine
    from loadgen.records import RecordWriter

    srv = start_sim("--step-base-ms", "1")
    convs, _ = read_sharegpt_conversations(sharegpt_file(tmp_path))
    wl = dataset_session_workload(convs, dataset="sharegpt", request_rate=50.0,
                                  think=parse_think_time("30"), output_len=2)
    writer = RecordWriter(tmp_path / "r.parquet")

    async def go():
        task = asyncio.ensure_future(run_engine(wl, ClientConfig(srv.base_url, "sim-llm"),
                                                writer))
        await asyncio.sleep(1.0)  # first turns are done; the others wait out their 30 s
        task.cancel()
        return await task

    res = asyncio.run(go())
    writer.close()
    assert res.interrupted and res.counters.started == 3
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "r.parquet")
    assert t.num_rows == 3 and set(t.column("turn").to_pylist()) == {0}
    assert set(t.column("status").to_pylist()) == {"ok"}
