"""Token counts from three sources (workload, server usage, server /tokenize) and the
summary's mismatch section; replay fidelity of a trace run in the summary."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from analysis.load import load_run
from analysis.metrics import col
from analysis.tokencheck import token_count_check
from loadgen.records import Record, rows_to_table
from tests.test_sessions import sharegpt_file


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ---- the check itself ----------------------------------------------------------------------

def _table(rows: list[tuple[int, int | None, int | None, str]]):
    recs = []
    for i, (exp, usage, tok, status) in enumerate(rows):
        recs.append(Record(request_id=i, status=status, expected_input_tokens=exp,
                           input_tokens=usage, input_tokens_source="usage" if usage else "none",
                           input_tokens_tokenize=tok).row())
    return rows_to_table(recs)


def test_mismatches_are_counted_per_pair_with_share_and_max_relative_difference():
    t = _table([(100, 100, 100, "ok"), (100, 101, 101, "ok"), (50, 60, 60, "ok"),
                (10, None, 10, "ok"), (7, 9, 9, "http_error")])
    ok = np.array([True, True, True, True, False])
    r = token_count_check(t, ok, "words")
    uv = r["pairs"]["usage_vs_expected"]
    assert (uv["n"], uv["mismatched"]) == (3, 2) and abs(uv["share"] - 2 / 3) < 1e-12
    assert abs(uv["max_rel_diff"] - 0.2) < 1e-12 and uv["max_abs_diff"] == 10
    assert uv["worst_request_id"] == 2
    assert r["pairs"]["usage_vs_tokenize"]["mismatched"] == 0
    assert r["pairs"]["tokenize_vs_expected"]["n"] == 4  # request 3 lacks only the usage count
    assert r["sources"] == {"expected": 4, "usage": 3, "tokenize": 4}
    assert r["flagged"] and len(r["mismatches"]) == 2


def test_agreeing_counts_are_not_flagged():
    r = token_count_check(_table([(5, 5, 5, "ok"), (8, 8, 8, "ok")]), np.array([True, True]),
                          "words")
    assert not r["flagged"] and r["mismatches"] == []
    assert {p["mismatched"] for p in r["pairs"].values()} == {0}


# ---- the sim's /tokenize -------------------------------------------------------------------

@pytest.mark.e2e
def test_sim_tokenize_counts_prompts_and_chat_messages_like_generation(start_sim):
    srv = start_sim()
    url = srv.base_url + "/tokenize"
    st, js = _post(url, {"prompt": "one two  three\nfour"})
    assert st == 200 and js["count"] == 4 and len(js["tokens"]) == 4
    assert _post(url, {"content": "a b"})[1]["count"] == 2  # llama-server's field name
    msgs = [{"role": "user", "content": "a b c"}, {"role": "assistant", "content": "d"}]
    assert _post(url, {"messages": msgs})[1]["count"] == 4
    assert _post(url, {"nothing": 1})[0] == 400


# ---- end to end ----------------------------------------------------------------------------

def _run(tmp_path: Path, base_url: str, name: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--base-url", base_url, "--model", "sim-llm",
         "--result-dir", str(tmp_path), "--run-name", name, "--no-progress", *flags],
        capture_output=True, text=True, timeout=90)


@pytest.mark.e2e
def test_count_tokens_with_server_fills_the_third_source_and_all_three_agree(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "1")
    p = _run(tmp_path, srv.base_url, "c", "--count-tokens-with-server", "--num-prompts", "12",
             "--request-rate", "30", "--random-input-len", "20", "--random-range-ratio", "0.5",
             "--random-output-len", "3")
    assert p.returncode == 0, p.stderr + p.stdout
    run = load_run(tmp_path / "c")
    tok = col(run.requests, "input_tokens_tokenize", np.int64)
    assert np.array_equal(tok, col(run.requests, "input_tokens", np.int64))
    assert np.array_equal(tok, col(run.requests, "expected_input_tokens", np.int64))
    assert run.manifest["token_counts"]["distinct_prompts"] == 12
    s = json.loads((tmp_path / "c" / "summary.json").read_text())
    tc = s["token_counts"]
    assert not tc["flagged"] and {p["n"] for p in tc["pairs"].values()} == {12}
    assert s["replay_fidelity"] is None  # not a trace replay


@pytest.mark.e2e
def test_chat_history_counted_without_its_role_labels_is_flagged(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "1")
    p = _run(tmp_path, srv.base_url, "h", "--endpoint", "/v1/chat/completions",
             "--count-tokens-with-server", "--dataset-name", "sharegpt", "--dataset-path",
             str(sharegpt_file(tmp_path)), "--dataset-sessions", "--think-time", "0",
             "--request-rate", "20", "--output-len", "2")
    assert p.returncode == 0, p.stderr + p.stdout
    tc = json.loads((tmp_path / "h" / "summary.json").read_text())["token_counts"]
    # the workload counted "User: ..." labels of the flattened history; the chat server does not
    assert tc["flagged"] and tc["pairs"]["usage_vs_expected"]["mismatched"] == 6
    assert tc["pairs"]["usage_vs_tokenize"]["mismatched"] == 0
    assert "token counts disagree" in p.stdout


def test_an_unreachable_tokenize_endpoint_fails_before_t0_naming_it(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = _run(tmp_path, f"http://127.0.0.1:{port}", "u", "--skip-preflight",
             "--count-tokens-with-server", "--num-prompts", "2", "--random-input-len", "3")
    assert p.returncode == 1
    assert f"127.0.0.1:{port}/tokenize" in p.stderr and "--count-tokens-with-server" in p.stderr
    assert not (tmp_path / "u").exists()


@pytest.mark.e2e
def test_a_trace_replay_reports_its_fidelity_to_the_traces_inter_arrival_times(start_sim,
                                                                               tmp_path):
    rng = np.random.default_rng(4)
    t = np.cumsum(rng.gamma(0.5, 0.1, 40))  # bursty: CV ~ 1.4, mean gap 50 ms
    lines = ["ts,i,o"] + [f"{x:.6f},8,2" for x in t]
    trace = tmp_path / "t.csv"
    trace.write_text("\n".join(lines) + "\n")
    srv = start_sim("--step-base-ms", "1")
    p = _run(tmp_path, srv.base_url, "r", "--trace", str(trace), "--trace-format", "csv",
             "--trace-columns", "time=ts,input=i,output=o", "--trace-speedup", "0.5")
    assert p.returncode == 0, p.stderr + p.stdout
    rf = json.loads((tmp_path / "r" / "summary.json").read_text())["replay_fidelity"]
    assert rf["n_intended"] == rf["n_sent"] == 40 and rf["transforms"] == ["speedup"]
    assert rf["same_distribution"] and rf["ks_stat"] < 0.2
    assert abs(rf["cv_sent"] - rf["cv_intended"]) < 0.1 * rf["cv_intended"]
    assert abs(rf["rate_intended"] - 39 / ((t[-1] - t[0]) * 2)) < 1e-6
    assert "replay fidelity: inter-arrival KS" in p.stdout
