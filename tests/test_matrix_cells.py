"""Expansion of an experiment into cells: the product, exclusions, overrides, the cell id,
the loadgen sweep command line of a cell, and the time estimate (pure, no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.cli import build_parser
from loadgen.matrix import estimate
from loadgen.matrix.cells import expand, matches
from loadgen.matrix.spec import ExperimentError, load_experiment, parse_text
from loadgen.matrix.sweepargs import expand_vars, sweep_argv

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
[experiment]
name = "t"
repetitions = 2

[axes]
runtimes = ["sim", "llamacpp"]
models = ["small", "big"]
batch_sizes = [1, 8, 64]
workloads = ["chat", "code"]
parallelism = [{ tp = 1 }, { tp = 4 }]

[load]
rates = [1, 2]
num_prompts = 10

[slo]
ttft_p99_ms = 500

[models.small]
source = "s.gguf"
params_b = 8

[models.big]
source = "b.gguf"
params_b = 400

[workloads.chat]
dataset = "sharegpt"
path = "${DATA:-/data}/sg.json"
output_len = 16

[workloads.code]
input_len = 64
"""


def cells_of(text: str):
    return expand(parse_text(text, "exp.toml"))


def test_the_matrix_is_the_product_of_its_axes_in_server_order():
    x = cells_of(BASE)
    assert len(x.cells) == 2 * 2 * 2 * 3 * 2 * 2 and not x.excluded
    groups = x.groups()
    assert len(groups) == 2 * 2 * 2 * 3  # workloads and repetitions share a server
    assert all(len(g) == 4 for g in groups)
    first = groups[0]
    assert [(c.axes["workload"], c.axes["repetition"]) for c in first] == [
        ("chat", 0), ("chat", 1), ("code", 0), ("code", 1)]
    assert len({c.id for c in x.cells}) == len(x.cells)


def test_exclusions_match_values_lists_comparisons_and_derived_keys():
    text = BASE + """
[[exclude]]
model = "big"
gpus = { lt = 4 }
reason = "does not fit"

[[exclude]]
runtime = "llamacpp"
tp = { gt = 1 }
reason = "no tensor parallelism"

[[exclude]]
params_b = { ge = 100 }
batch_size = [64]
reason = "no memory for 64 sequences"
"""
    x = cells_of(text)
    kept = {(c.axes["runtime"], c.axes["model"], c.axes["tp"], c.axes["batch_size"])
            for c in x.cells}
    assert ("sim", "big", 1, 1) not in kept and ("sim", "big", 4, 1) in kept
    assert not any(r == "llamacpp" and tp == 4 for r, _, tp, _ in kept)
    assert ("sim", "big", 4, 64) not in kept and ("sim", "small", 4, 64) in kept
    by_reason = {}
    for e in x.excluded:
        by_reason[e.reason] = by_reason.get(e.reason, 0) + 1
    # big x tp1: 2 runtimes x 3 batches x 2 workloads x 2 reps
    assert by_reason["does not fit"] == 24
    assert len(x.cells) + len(x.excluded) == 96


def test_matches_treats_a_missing_value_as_no_match_for_comparisons():
    assert matches({"params_b": {"gt": 10}}, {"params_b": 20})
    assert not matches({"params_b": {"gt": 10}}, {"params_b": None})
    assert matches({"runtime": ["a", "b"], "tp": 1}, {"runtime": "b", "tp": 1})


def test_overrides_merge_tables_append_flags_and_apply_in_file_order():
    text = BASE + """
[runtimes.sim]
flags = ["--seed", "1"]

[[override]]
match = { runtime = "sim", batch_size = 64 }
load = { rates = [5, 10] }
flags = ["--step-base-ms", "1"]
slo = { e2e_p99_ms = 900 }

[[override]]
match = { batch_size = 64 }
load = { num_prompts = 3 }
workload = { output_len = 4 }
"""
    x = cells_of(text)
    c64 = next(c for c in x.cells if c.axes["runtime"] == "sim" and c.axes["batch_size"] == 64
               and c.axes["workload"] == "chat")
    c1 = next(c for c in x.cells if c.axes["runtime"] == "sim" and c.axes["batch_size"] == 1
              and c.axes["workload"] == "chat")
    assert c64.config["load"]["rates"] == [5.0, 10.0] and c64.config["load"]["num_prompts"] == 3
    assert c64.config["server"]["flags"] == ["--seed", "1", "--step-base-ms", "1"]
    assert c64.config["workload"]["output_len"] == 4
    assert c64.slo == {"ttft_p99_ms": 500, "e2e_p99_ms": 900}
    assert c1.config["load"]["rates"] == [1.0, 2.0] and c1.config["server"]["flags"] == ["--seed", "1"]
    assert c1.config["workload"]["output_len"] == 16


def test_an_override_that_makes_a_table_invalid_is_named_with_its_line():
    text = BASE + '\n[[override]]\nmatch = { batch_size = 8 }\nload = { rates = "fast" }\n'
    with pytest.raises(ExperimentError) as ei:
        cells_of(text)
    msgs = [p.render("exp.toml") for p in ei.value.problems]
    assert len(msgs) == 1 and msgs[0].startswith("exp.toml:37: override[0].load.rates: rates "
                                                 "must be a list")


def test_the_cell_id_ignores_the_slo_and_names_but_not_what_is_measured():
    ids = [c.id for c in cells_of(BASE).cells]
    assert ids == [c.id for c in cells_of(BASE).cells]  # stable
    same = BASE.replace("ttft_p99_ms = 500", "ttft_p99_ms = 50").replace('name = "t"',
                                                                         'name = "other"')
    assert [c.id for c in cells_of(same).cells] == ids
    base = {c.label: c.id for c in cells_of(BASE).cells}

    def changed_by(old: str, new: str) -> set[str]:
        after = {c.label: c.id for c in cells_of(BASE.replace(old, new)).cells}
        return {k for k in base if after[k] != base[k]}

    assert changed_by("num_prompts = 10", "num_prompts = 11") == set(base)  # the load: all
    assert changed_by("output_len = 16", "output_len = 8") == {
        k for k in base if "/chat/" in k}  # one workload: its cells only
    assert changed_by('source = "s.gguf"', 'source = "s2.gguf"') == {
        k for k in base if "/small/" in k}  # one model's source: its cells only
    assert len({c.id for c in cells_of(BASE).cells if c.axes["repetition"] == 1}
               & {c.id for c in cells_of(BASE).cells if c.axes["repetition"] == 0}) == 0


def test_a_model_without_a_source_for_a_runtime_is_a_recorded_skip_except_on_the_sim():
    text = BASE.replace('[models.small]\nsource = "s.gguf"', '[models.small]')
    x = cells_of(text)
    small = [c for c in x.cells if c.axes["model"] == "small"]
    assert all(c.skip is None and c.config["server"]["model"]["source"] == "small"
               for c in small if c.axes["runtime"] == "sim")
    assert all("has no source for runtime 'llamacpp'" in c.skip
               for c in small if c.axes["runtime"] == "llamacpp")


def test_a_cell_is_a_loadgen_sweep_command_line():
    x = cells_of(BASE.replace("[models.small]", '[runtimes.sim]\nclient = { headers = '
                              '{ Connection = "close" }, ignore_eos = true }\n\n[models.small]'))
    c = next(c for c in x.cells if c.axes["runtime"] == "sim" and c.axes["workload"] == "chat")
    argv = sweep_argv(c, "http://127.0.0.1:9", "small", "/tmp/store/cells/x", "attempt-1",
                      env={"DATA": "/d"})
    ns = build_parser().parse_args(argv)
    assert (ns.dataset_name, ns.dataset_path, ns.output_len) == ("sharegpt", "/d/sg.json", 16)
    assert (ns.rates, ns.num_prompts, ns.result_dir, ns.run_name) == (
        "1,2", 10, "/tmp/store/cells/x", "attempt-1")
    assert ns.header == [("Connection", "close")] and ns.ignore_eos is True
    assert ns.no_stop is False and ns.quiet is True


def test_expand_vars_uses_the_environment_and_shell_defaults():
    assert expand_vars("${A:-x}/f", {}) == "x/f"
    assert expand_vars("${A:-x}/f", {"A": "/a"}) == "/a/f"
    with pytest.raises(KeyError, match=r"\$\{B\} is not set"):
        expand_vars("${B}/f", {})


def test_the_estimate_adds_load_time_overheads_and_one_start_per_server():
    x = cells_of(BASE)
    c = x.cells[0]
    # rates 1 and 2 req/s, 10 requests each: 10 s + 5 s of load plus 2 run overheads
    assert estimate.cell_s(c) == pytest.approx(15 + 2 * estimate.RUN_OVERHEAD_S)
    g = x.groups()[0]
    assert estimate.total_s([g]) == pytest.approx(
        estimate.DEFAULT_STARTUP_S["sim"] + 4 * estimate.cell_s(c))


def test_the_seed_gpu_matrix_leaves_out_the_cells_that_make_no_sense():
    x = expand(load_experiment(ROOT / "experiments" / "seed-gpu.toml"))
    assert len(x.cells) + len(x.excluded) == 6 * 7 * 2 * 4 * 4
    for c in x.cells:
        a = c.axes
        assert not (a["model"] == "llama-3.1-405b" and a["tp"] < 8)
        assert not (a["runtime"] in ("pytorch", "llamacpp") and a["tp"] > 1)
        assert not (a["runtime"] == "llamacpp" and a["model"].startswith("opt-"))
    vllm_opt = next(c for c in x.cells if c.axes["runtime"] == "vllm"
                    and c.axes["model"] == "opt-13b")
    assert vllm_opt.config["server"]["flags"][-2:] == ["--max-model-len", "2048"]
    assert {c.axes["runtime"] for c in x.cells} == {"vllm", "llamacpp", "pytorch", "triton"}


def test_a_trace_workload_with_transforms_becomes_the_trace_flags_and_replays_at_each_rate():
    trace = Path("/work/shared/data/burstgpt/BurstGPT_1_rows1-400.csv")
    if not trace.exists():
        pytest.skip(f"trace sample {trace} is absent (see /work/shared/data/README.md)")
    from loadgen.workload_flags import build_workload

    text = BASE.replace('[workloads.code]\ninput_len = 64', f"""[workloads.code]
trace = "{trace}"
trace_format = "burstgpt"
transforms = {{ filter = ["model=ChatGPT"], window = "0:20000", speedup = 2.0 }}""")
    c = next(c for c in cells_of(text).cells if c.axes["workload"] == "code")
    ns = build_parser().parse_args(sweep_argv(c, "http://127.0.0.1:9", "m", "/tmp/x", "a-1"))
    assert (ns.trace_format, ns.trace_filter, ns.trace_window, ns.trace_speedup) == (
        "burstgpt", ["model=ChatGPT"], "0:20000", 2.0)
    ns.trace_rate, ns.num_prompts = 5.0, 50  # what loadgen sweep sets for each rate
    wl = build_workload(ns)
    assert len(wl) == 50
    rate = (len(wl) - 1) / (wl.t_intended[-1] - wl.t_intended[0])
    assert 3.0 < rate < 8.5  # thinned towards 5 req/s (bursty, so only roughly)
