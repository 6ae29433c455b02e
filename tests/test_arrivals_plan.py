"""Plans: a workload written as JSONL, read back exactly; the CLI writes and replays them."""

import numpy as np
import pytest

from arrivals.plan import PlanError, plan_bytes, read_plan, write_plan
from arrivals.workload import synthetic_workload
from loadgen.cli import main
from tests.test_arrivals_traces import BURSTGPT, need


def test_a_plan_read_back_is_the_same_workload_and_the_same_bytes(tmp_path):
    wl = synthetic_workload(num_requests=50, request_rate=7.0, input_len=20, output_len=5,
                            range_ratio=0.5, seed=3)
    p = write_plan(wl, tmp_path / "p.jsonl")
    back = read_plan(p)
    assert np.array_equal(back.t_intended, wl.t_intended) and back.prompts == wl.prompts
    assert np.array_equal(back.input_tokens, wl.input_tokens)
    assert plan_bytes(back) == p.read_bytes()


def _plan(tmp_path, name, *extra):
    out = tmp_path / name
    rc = main(["plan", "--trace", str(need(BURSTGPT)), "--trace-format", "burstgpt",
               "--trace-speedup", "50", "--trace-rate", "20", "--seed", "9", *extra,
               "--output", str(out)])
    assert rc == 0
    return out


def test_same_flags_and_seed_give_an_identical_plan_file(tmp_path):
    a, b = _plan(tmp_path, "a.jsonl"), _plan(tmp_path, "b.jsonl")
    assert a.read_bytes() == b.read_bytes()
    assert _plan(tmp_path, "c.jsonl", "--num-prompts", "10").read_bytes() != a.read_bytes()


def test_cli_plan_holds_every_request_and_the_description(tmp_path):
    wl = read_plan(_plan(tmp_path, "a.jsonl", "--num-prompts", "30"))
    assert len(wl) == 30 and wl.dataset == "trace:burstgpt"
    ops = [d["op"] for d in wl.description["trace"]["transforms"]]
    assert ops[0] == "speedup" and "to_rate" in ops
    assert wl.item_ids[0].startswith("BurstGPT_1_rows1-400.csv:")


def test_a_missing_plan_file_says_how_to_make_one(tmp_path):
    with pytest.raises(PlanError, match="no such plan file.*loadgen plan"):
        read_plan(tmp_path / "none.jsonl")


def test_a_bad_plan_line_is_named(tmp_path):
    p = write_plan(synthetic_workload(num_requests=3, request_rate=1.0, seed=0), tmp_path / "p")
    lines = p.read_bytes().splitlines(keepends=True)
    p.write_bytes(b"".join(lines[:2]) + lines[2].replace(b'"output_tokens":', b'"output_x":')
                  + lines[3])
    with pytest.raises(PlanError, match=r"p:3: missing field 'output_tokens'"):
        read_plan(p)
    p.write_bytes(b"".join(lines[:3]))
    with pytest.raises(PlanError, match="header says 3 requests but the file has 2"):
        read_plan(p)
    p.write_bytes(b'{"format": "something else"}\n')
    with pytest.raises(PlanError, match="not a loadgen-plan"):
        read_plan(p)


def test_cli_run_with_a_missing_plan_fails_with_a_message(tmp_path, capsys):
    rc = main(["run", "--model", "m", "--plan", str(tmp_path / "none.jsonl"),
               "--skip-preflight", "--result-dir", str(tmp_path)])
    assert rc == 1 and "no such plan file" in capsys.readouterr().err


def test_cli_trace_without_format_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["plan", "--trace", str(tmp_path / "x.csv"), "--output", str(tmp_path / "p")])
    assert e.value.code == 2


def test_run_with_plan_builds_exactly_the_planned_workload(tmp_path):
    from loadgen.cli import build_parser, build_workload

    plan = _plan(tmp_path, "a.jsonl")
    ns = build_parser().parse_args(["run", "--model", "m", "--plan", str(plan)])
    assert plan_bytes(build_workload(ns)) == plan.read_bytes()
