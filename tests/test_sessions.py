"""Multi-turn sessions as data: conversations, think times, trace sessions, validation, plans."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from arrivals.conversations import (
    Conversation,
    dataset_session_workload,
    flatten,
    history,
    trace_session_workload,
)
from arrivals.datasets.sharegpt import read_sharegpt_conversations
from arrivals.plan import plan_bytes, read_plan, write_plan
from arrivals.sessions import Sessions
from arrivals.think import parse_think_time
from arrivals.traces import read_burstgpt, read_trace
from arrivals.transforms import speedup
from arrivals.workload import Workload
from loadgen.cli import build_parser, main
from loadgen.flags import UsageError
from loadgen.workload_flags import build_workload

FIXTURES = Path(__file__).parent / "fixtures"
BURST8 = FIXTURES / "burstgpt_8col.csv"
SHAREGPT_MULTI = Path("/work/shared/data/sharegpt/sharegpt_multiturn_500.json")


def need(p: Path) -> Path:
    if not p.is_file():
        pytest.skip(f"real data sample {p} is absent (see /work/shared/data/README.md)")
    return p


def sharegpt_file(tmp_path: Path) -> Path:
    """Three small conversations: one starting with a gpt turn, one with a system prompt
    and two human messages in a row, one ending on a human turn."""
    convs = [
        {"id": "a", "conversations": [
            {"from": "gpt", "value": "continued from an earlier part"},
            {"from": "human", "value": "one two three"},
            {"from": "gpt", "value": "four five"},
            {"from": "human", "value": "six"},
            {"from": "gpt", "value": "seven eight nine"}]},
        {"id": "b", "conversations": [
            {"from": "system", "value": "be brief"},
            {"from": "human", "value": "alpha"},
            {"from": "human", "value": "beta"},
            {"from": "gpt", "value": "gamma delta"},
            {"from": "human", "value": "epsilon zeta"},
            {"from": "gpt", "value": "eta"}]},
        {"id": "c", "conversations": [
            {"from": "human", "value": "x y"},
            {"from": "gpt", "value": "z"},
            {"from": "human", "value": "last question"}]},
    ]
    p = tmp_path / "sharegpt.json"
    p.write_text(json.dumps(convs), encoding="utf-8")
    return p


# ---- conversations -------------------------------------------------------------------------

def test_sharegpt_conversations_skip_leading_gpt_turns_and_merge_same_side_messages(tmp_path):
    convs, info = read_sharegpt_conversations(sharegpt_file(tmp_path))
    by = {c.id: c for c in convs}
    assert by["a"].turns == [("one two three", "four five"), ("six", "seven eight nine")]
    assert by["b"].system == "be brief"
    assert by["b"].turns == [("alpha\n\nbeta", "gamma delta"), ("epsilon zeta", "eta")]
    assert by["c"].turns == [("x y", "z"), ("last question", None)]
    assert info["started_with_gpt_turn"] == 1 and info["merged_consecutive_same_side"] == 1


def test_real_sharegpt_sample_gives_alternating_turns_for_every_conversation():
    convs, info = read_sharegpt_conversations(need(SHAREGPT_MULTI))
    assert len(convs) == 500 - info["skipped_no_human_turn"]
    assert info["started_with_gpt_turn"] > 100  # about a third of V3's split chats
    assert all(c.turns and all(u.strip() for u, _ in c.turns) for c in convs)
    assert all(r is not None for c in convs for _, r in c.turns[:-1])  # only the last may lack one


def test_turn_k_history_is_the_earlier_turns_with_their_recorded_replies():
    conv = Conversation("s", [("u0", "a0"), ("u1", "a1"), ("u2", None)], system="sys")
    assert history(conv, 2) == [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "u0"},
        {"role": "assistant", "content": "a0"}, {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]
    assert flatten(history(conv, 1)) == "System: sys\n\nUser: u0\n\nAssistant: a0\n\nUser: u1"


def _ds(tmp_path, **kw) -> Workload:
    convs, info = read_sharegpt_conversations(sharegpt_file(tmp_path))
    args = dict(dataset="sharegpt", request_rate=2.0, think=parse_think_time("exp:4"), seed=1,
                info=info)
    return dataset_session_workload(convs, **(args | kw))


def test_session_workload_schedules_first_turns_only_and_chains_the_rest(tmp_path):
    wl = _ds(tmp_path)
    ss = wl.sessions
    first = ss.turn == 0
    assert ss.n_sessions == 3 and len(wl) == 6
    assert np.all(np.isfinite(wl.t_intended[first])) and np.all(np.isnan(wl.t_intended[~first]))
    assert np.all(np.diff(wl.t_intended[first]) >= 0)
    for i in np.flatnonzero(ss.next_turn >= 0):
        j = ss.next_turn[i]
        assert ss.session_id[j] == ss.session_id[i] and ss.turn[j] == ss.turn[i] + 1
        assert wl.prompts[j].startswith(wl.prompts[i])  # the history grows
        assert wl.input_tokens[j] > wl.input_tokens[i]
    assert np.all(ss.think_s[first] == 0) and np.all(ss.think_s[~first] > 0)
    assert wl.description["sessions"]["sessions"] == 3
    assert wl.description["think_time"]["kind"] == "exp"


def test_output_lengths_are_the_recorded_replies_and_the_default_for_a_last_open_turn(tmp_path):
    wl = _ds(tmp_path, default_output_len=77)
    by = {(s, int(k)): int(o) for s, k, o in zip(wl.sessions.session_id, wl.sessions.turn,
                                                  wl.output_tokens, strict=True)}
    sid_c = next(s for s in wl.sessions.session_id if s.endswith(":c"))
    assert by[(sid_c, 0)] == 1 and by[(sid_c, 1)] == 77  # "z", then no reply recorded
    assert wl.description["output_len_source"] == {"fixed": 0, "reference": 5, "default": 1}


def test_same_seed_same_sessions_and_think_times(tmp_path):
    a, b, c = _ds(tmp_path), _ds(tmp_path), _ds(tmp_path, seed=2)
    assert a.prompts == b.prompts and np.array_equal(a.sessions.think_s, b.sessions.think_s)
    assert not np.array_equal(a.sessions.think_s, c.sessions.think_s)


def test_max_turns_cuts_each_conversation(tmp_path):
    wl = _ds(tmp_path, max_turns=1)
    assert len(wl) == 3 and np.all(wl.sessions.turn == 0)


# ---- validation ----------------------------------------------------------------------------

def _sess(turn, nxt, sid=None, think=None):
    n = len(turn)
    return Sessions(session_id=sid or ["s"] * n, turn=np.array(turn), think_s=np.array(
        think if think is not None else [0.0 if k == 0 else 1.0 for k in turn]),
        next_turn=np.array(nxt))


def _wl(t, sessions):
    n = len(t)
    return Workload(t_intended=np.array(t, dtype=float), prompts=["p"] * n,
                    input_tokens=np.ones(n, np.int64), output_tokens=np.ones(n, np.int64),
                    sessions=sessions)


def test_a_valid_two_session_structure_is_accepted():
    wl = _wl([0.0, math.nan, 1.0], _sess([0, 1, 0], [1, -1, -1], ["a", "a", "b"]))
    assert wl.sessions.n_sessions == 2 and wl.duration == 1.0


@pytest.mark.parametrize("t,turn,nxt,sid,match", [
    ([1.0, math.nan, 0.5], [0, 1, 0], [1, -1, -1], ["a", "a", "b"], "non-decreasing"),
    ([0.0, 2.0], [0, 1], [1, -1], None, "must be NaN"),
    ([0.0, math.nan], [0, 1], [-1, -1], None, "exactly one"),
    ([0.0, math.nan], [0, 2], [1, -1], None, "one more"),
    ([0.0, math.nan], [0, 1], [1, -1], ["a", "b"], "different session ids"),
    ([0.0, math.nan], [0, 1], [0, -1], None, "later request"),
])
def test_inconsistent_session_structures_are_rejected_with_the_reason(t, turn, nxt, sid, match):
    with pytest.raises(ValueError, match=match):
        _wl(t, _sess(turn, nxt, sid))


def test_head_keeps_whole_sessions(tmp_path):
    wl = _ds(tmp_path)
    h = wl.head(2)
    assert h.sessions.n_sessions == 2
    assert len(h) == int(np.sum(wl.sessions.session_index() < 2))
    assert set(h.sessions.session_id) == set(wl.sessions.session_id[:len(h)])


# ---- think times ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec,mean,cv", [
    ("2.5", 2.5, 0.0), ("const:1", 1.0, 0.0), ("exp:3", 3.0, 1.0), ("gamma:2:0.5", 2.0, 0.5),
    ("lognormal:4:2", 4.0, 2.0), ("uniform:1:3", 2.0, 1 / (2 * math.sqrt(3))),
])
def test_think_time_samples_have_the_stated_mean_and_cv(spec, mean, cv):
    x = parse_think_time(spec).sample(200_000, np.random.default_rng(0))
    assert np.all(x >= 0)
    # sampling error of the mean: 5 standard errors; the CV within 5 % (lognormal: 10 %)
    assert abs(x.mean() - mean) < 5 * mean * max(cv, 1e-9) / math.sqrt(x.size) + 1e-12
    assert abs(x.std() / x.mean() - cv) <= (0.1 if spec.startswith("lognormal") else 0.05) * cv


@pytest.mark.parametrize("spec", ["fast", "exp", "exp:-1", "gamma:2", "uniform:3:1", "gamma:0:1"])
def test_bad_think_time_specs_are_refused_naming_the_spec(spec):
    with pytest.raises(ValueError, match="think time"):
        parse_think_time(spec)


# ---- trace sessions ------------------------------------------------------------------------

def test_trace_think_times_are_the_gap_minus_the_elapsed_time():
    # fixture: s0 at 5 (elapsed 1.5), 118 (3.5), 214; s1 at 45 (2.5), 185, 1106 (failed)
    wl = trace_session_workload(read_burstgpt(BURST8))
    ss = wl.sessions
    assert ss.session_id == ["s0", "s0", "s0", "s1", "s1"]
    assert np.allclose(ss.think_s, [0, 118 - 5 - 1.5, 214 - 118 - 3.5, 0, 185 - 45 - 2.5])
    assert np.array_equal(wl.t_intended[ss.turn == 0], [0.0, 40.0])
    assert wl.description["failed_dropped"] == 1
    assert wl.description["think_time"]["source"] == "trace"


def test_speedup_scales_the_trace_think_times_too():
    tr = speedup(read_burstgpt(BURST8), 10.0)
    wl = trace_session_workload(tr)
    assert np.allclose(wl.sessions.think_s, np.array([0, 111.5, 92.5, 0, 137.5]) / 10)
    assert wl.description["think_time"]["speedup"] == 10.0


def test_a_think_time_distribution_replaces_the_traces_own():
    wl = trace_session_workload(read_burstgpt(BURST8), think=parse_think_time("0.25"))
    assert np.allclose(wl.sessions.think_s[wl.sessions.turn > 0], 0.25)


def test_total_input_mode_keeps_the_traces_prompt_length_unless_the_history_is_longer():
    wl = trace_session_workload(read_burstgpt(BURST8), input_mode="total")
    # s1 turn 1: 1360 >= history 1087 + 230 + 2 labels, so the prompt has the trace's length
    assert wl.input_tokens.tolist()[3:] == [1087, 1360]
    assert wl.input_tokens[0] == 472
    assert wl.input_tokens[1] > 417  # history 472 + 18 is longer than the trace's 417
    assert wl.description["history_longer_than_trace_input"] == 2


def test_turn_input_mode_puts_the_history_on_top_of_the_traces_length():
    wl = trace_session_workload(read_burstgpt(BURST8), input_mode="turn")
    # turn 1 of s1: "User:" 1087 words, "Assistant:" 230 words, "User:" 1360 words
    assert wl.input_tokens[4] == 1 + 1087 + 1 + 230 + 1 + 1360
    assert wl.input_tokens[1] == 1 + 472 + 1 + 18 + 1 + 417


def test_a_generic_csv_trace_with_session_and_elapsed_columns(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("ts,conv,dur,i,o\n0,u1,0.5,10,5\n1,u2,0.2,10,5\n3,u1,0.5,10,5\n4,,0.1,3,3\n")
    tr = read_trace(p, "csv", columns={"time": "ts", "input": "i", "output": "o",
                                       "session_id": "conv", "elapsed": "dur"})
    wl = trace_session_workload(tr)
    assert wl.sessions.n_sessions == 3  # u1 (2 turns), u2, and the row without an id
    assert np.allclose(wl.sessions.think_s, [0, 3 - 0 - 0.5, 0, 0])


def test_a_trace_without_session_ids_says_which_column_to_map():
    tr = read_trace(BURST8, "burstgpt")
    tr = type(tr)(**{**tr.__dict__, "extra": {"model": tr.extra["model"]}})
    with pytest.raises(ValueError, match="session_id"):
        trace_session_workload(tr)


# ---- plans ---------------------------------------------------------------------------------

def test_a_session_plan_round_trips_byte_for_byte(tmp_path):
    wl = _ds(tmp_path)
    p = write_plan(wl, tmp_path / "s.jsonl")
    back = read_plan(p)
    assert plan_bytes(back) == p.read_bytes()
    assert back.sessions.session_id == wl.sessions.session_id
    assert np.array_equal(back.sessions.next_turn, wl.sessions.next_turn)
    assert np.array_equal(back.sessions.think_s, wl.sessions.think_s)
    assert back.sessions.messages == wl.sessions.messages
    assert np.array_equal(np.isnan(back.t_intended), np.isnan(wl.t_intended))
    lines = p.read_bytes().splitlines()
    assert json.loads(lines[0])["version"] == 2 and json.loads(lines[0])["sessions"] is True
    assert any(json.loads(x)["t_intended"] is None for x in lines[1:])


def test_cli_plan_with_dataset_sessions_and_a_session_cap(tmp_path):
    src = sharegpt_file(tmp_path)
    out = tmp_path / "p.jsonl"
    rc = main(["plan", "--dataset-name", "sharegpt", "--dataset-path", str(src),
               "--dataset-sessions", "--think-time", "gamma:2:0.5", "--request-rate", "1",
               "--seed", "3", "-o", str(out)])
    assert rc == 0
    wl = read_plan(out)
    assert wl.sessions.n_sessions == 3 and len(wl) == 6
    ns = build_parser().parse_args(["plan", "-o", "x", "--plan", str(out), "--num-prompts", "2"])
    capped = build_workload(ns)
    assert capped.sessions.n_sessions == 2 and capped.description["capped_to"] == 2


def test_cli_trace_sessions_plan_is_reproducible(tmp_path):
    args = ["plan", "--trace", str(BURST8), "--trace-format", "burstgpt", "--trace-sessions",
            "--trace-speedup", "100"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert read_plan(tmp_path / "a").sessions.n_sessions == 2


@pytest.mark.parametrize("flags,match", [
    (["--dataset-name", "sharegpt", "--dataset-path", "x", "--dataset-sessions"], "--think-time"),
    (["--dataset-name", "alpaca", "--dataset-path", "x", "--dataset-sessions",
      "--think-time", "1"], "sharegpt"),
    (["--trace", str(BURST8), "--trace-format", "burstgpt", "--trace-sessions",
      "--trace-rate", "2"], "--trace-speedup"),
    (["--think-time", "exp:2"], "applies to sessions"),
    (["--trace", str(BURST8), "--trace-format", "burstgpt", "--trace-sessions",
      "--prompt-tokens-from", "words"], "--prompt-tokens-from"),
])
def test_session_flags_out_of_place_are_usage_errors(flags, match):
    ns = build_parser().parse_args(["plan", "-o", "x", *flags])
    with pytest.raises(UsageError, match=match):
        build_workload(ns)


def test_chat_bodies_carry_the_history_as_messages_and_completions_the_flat_prompt(tmp_path):
    import orjson

    from loadgen.clients.openai import ClientConfig, OpenAIClient

    wl = _ds(tmp_path)
    chat = OpenAIClient(ClientConfig("http://x", "m", endpoint="/v1/chat/completions"))
    comp = OpenAIClient(ClientConfig("http://x", "m"))
    j = int(np.flatnonzero(wl.sessions.turn == 1)[0])
    cb = orjson.loads(chat.prepare(wl)[j])
    assert cb["messages"] == wl.sessions.messages[j] and len(cb["messages"]) >= 3
    assert orjson.loads(comp.prepare(wl)[j])["prompt"] == wl.prompts[j]
