"""``profile = "perf"|"nsys"`` in an experiment file: validated, part of a cell's id only when
set, and a real perf trace of each profiled sim cell kept in that cell's run directories
(perf from the ``perf_tool`` fixture, tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.matrix import estimate
from loadgen.matrix.cells import expand
from loadgen.matrix.runner import MatrixRunner
from loadgen.matrix.spec import ExperimentError, load_experiment, parse_text
from loadgen.matrix.store import Store

SIM = """\
[experiment]
name = "prof"

[axes]
runtimes = {runtimes}
models = ["m"]
batch_sizes = [4]
workloads = ["short", "long"]

[load]
rates = [8, 16]
num_prompts = 8
stop_when_saturated = false
max_send_lag_ms = 1000

[models.m]
source = "m.gguf"

[workloads.short]
input_len = 8
random_output_len = 4

[workloads.long]
input_len = 64
random_output_len = 4
{extra}"""


def experiment(runtimes: str = '["sim"]', extra: str = ""):
    return parse_text(SIM.format(runtimes=runtimes, extra=extra), "exp.toml")


def test_an_unknown_profiler_in_an_experiment_is_an_error_on_its_line():
    with pytest.raises(ExperimentError) as e:
        experiment(extra='\n[runtimes.sim]\nprofile = "vtune"\n')
    assert "exp.toml:28: runtimes.sim.profile" in str(e.value) and "'perf'" in str(e.value)


def test_profiling_a_runtime_makes_its_cells_new_cells_and_leaves_the_others_alone():
    plain = expand(experiment('["sim", "llamacpp"]'))
    prof = expand(experiment('["sim", "llamacpp"]', '\n[runtimes.sim]\nprofile = "perf"\n'))
    ids = {c.label: c.id for c in plain.cells}
    for c in prof.cells:
        assert (c.id == ids[c.label]) == (c.axes["runtime"] == "llamacpp"), c.label
        assert c.config["server"].get("profile") == ("perf" if c.axes["runtime"] == "sim"
                                                     else None)


def test_an_override_profiles_only_the_cells_it_matches():
    x = expand(experiment(extra='\n[[override]]\nmatch = { workload = "long" }\n'
                                'profile = "nsys"\n'))
    assert {c.axes["workload"]: c.config["server"].get("profile") for c in x.cells} == \
        {"short": None, "long": "nsys"}
    assert len(x.groups()) == 2  # a profiled server is another server configuration


def test_the_estimate_counts_one_server_start_per_profiled_cell():
    plain = expand(experiment())
    prof = expand(experiment(extra='\n[runtimes.sim]\nprofile = "perf"\n'))
    start = estimate.DEFAULT_STARTUP_S["sim"]
    assert estimate.total_s(prof.groups()) - estimate.total_s(plain.groups()) == \
        pytest.approx(start)  # 2 cells: 2 starts instead of 1


def test_a_profiled_runtime_without_its_profiler_skips_its_cells_saying_why(
        tmp_path, monkeypatch):
    f = tmp_path / "exp.toml"
    f.write_text(SIM.format(runtimes='["sim"]', extra='\n[runtimes.sim]\nprofile = "perf"\n'))
    exp = load_experiment(f)
    x = expand(exp)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = MatrixRunner(exp, x, Store(tmp_path / "store"), log=lambda m: None,
                       index=False).run()
    assert out.counts() == {"skipped": 2}
    for c in x.cells:
        rec = Store(tmp_path / "store").read_cell(c.id)
        assert "profiler 'perf' not found on PATH" in rec["cause"]
        assert "apt-get install linux-perf" in rec["cause"]


@pytest.mark.e2e
def test_each_profiled_cell_keeps_its_own_perf_trace_in_its_run_directories(tmp_path, perf_tool):
    f = tmp_path / "exp.toml"
    f.write_text(SIM.format(runtimes='["sim"]', extra='\n[runtimes.sim]\nprofile = "perf"\n'))
    exp = load_experiment(f)
    x = expand(exp)
    store = Store(tmp_path / "store")
    out = MatrixRunner(exp, x, store, log=lambda m: None, index=False).run()
    assert out.counts() == {"complete": 2}
    started = set()
    for c in x.cells:
        att = store.read_cell(c.id)["attempts"][-1]
        assert att["profile"]["complete"] and att["profile"]["source"] is None
        assert sorted(att["profile"]["runs"]) == ["rate-16", "rate-8"]
        for run_name, files in att["profile"]["runs"].items():
            run = store.cell_dir(c.id) / att["dir"] / run_name
            prof = json.loads((run / "manifest.json").read_text())["server_launch"]["profile"]
            assert files == prof["files"] == ["profile/perf.data"] and prof["complete"]
            assert (run / "profile" / "perf.data").stat().st_size == \
                prof["attached"]["files"][0]["bytes"] > 0
            started.add(prof["covers"]["server_started_unix"])
    assert len(started) == 2  # one server per cell: each trace is that cell's alone
    assert not list(Path(store.logs_dir).glob("profile-*"))  # moved into the runs
