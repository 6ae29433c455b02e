"""Experiment files: the TOML key locator, and validation errors that name the key and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.matrix.locate import key_lines, line_of
from loadgen.matrix.spec import ExperimentError, format_key, load_experiment, parse_text

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
[experiment]
name = "t"

[axes]
runtimes = ["sim"]
models = ["m"]
batch_sizes = [1, 4]
workloads = ["w"]

[models.m]

[workloads.w]
input_len = 32
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ExperimentError) as ei:
        parse_text(text, "exp.toml")
    return [p.render("exp.toml") for p in ei.value.problems]


def test_locator_finds_tables_keys_and_array_of_tables_entries():
    text = ('[experiment]\nname = "x"  # [not a table]\n'
            'note = """\n[fake]\nk = 1\n"""\n'
            '[axes]\nruntimes = [\n  "sim",\n]\nmodels = ["a"]\n'
            '[[exclude]]\nruntime = "sim"\n[[exclude]]\nmodel = "a"\n[exclude.sub]\nx = 1\n'
            '[models."llama-3.1-8b"]\nsources = { llamacpp = "a.gguf" }\n')
    lines = key_lines(text)
    assert lines[("experiment", "name")] == 2
    assert ("fake",) not in lines and ("k",) not in lines  # inside a multi-line string
    assert lines[("axes", "models")] == 11  # after the multi-line array
    assert lines[("exclude", 0, "runtime")] == 13
    assert lines[("exclude", 1, "model")] == 15
    assert lines[("exclude", 1, "sub", "x")] == 17
    assert lines[("models", "llama-3.1-8b", "sources")] == 19
    # a key inside an inline table: the line of the enclosing key
    assert line_of(text, ("models", "llama-3.1-8b", "sources", "llamacpp")) == 19


def test_a_valid_file_parses():
    exp = parse_text(BASE, "exp.toml")
    assert exp.spec.axes.batch_sizes == [1, 4] and exp.spec.load.rates == "auto"


def test_an_unknown_key_is_named_with_its_line_and_the_keys_allowed():
    out = problems(BASE.replace('input_len = 32', 'input_len = 32\nrate = 4'))
    assert len(out) == 1
    assert out[0].startswith("exp.toml:14: workloads.w.rate: unknown key; this table takes: ")
    assert "dataset" in out[0] and "arrival" in out[0]


def test_a_wrong_type_names_the_key_and_the_line():
    out = problems(BASE + '\n[load]\nrates = [2, "fast"]\n')
    assert out == ["exp.toml:16: load.rates: each rate must be a finite number > 0 (req/s), "
                   "got 'fast'"]


def test_every_problem_is_reported_at_once():
    text = BASE.replace('batch_sizes = [1, 4]', 'batch_sizes = [0]').replace(
        'input_len = 32', 'input_len = -1\narrival = "uniform"')
    out = problems(text)
    keys = sorted(o.split(": ")[1] for o in out)
    assert keys == ["axes.batch_sizes", "workloads.w.arrival", "workloads.w.input_len"]
    assert any(o.startswith("exp.toml:7: axes.batch_sizes") for o in out)
    assert any(o.startswith("exp.toml:14: workloads.w.arrival") for o in out)


def test_an_axis_naming_an_undefined_model_points_at_the_axis():
    out = problems(BASE.replace('models = ["m"]', 'models = ["m", "other"]'))
    assert out == ["exp.toml:6: axes.models[1]: model 'other' is not defined: add a "
                   "[models.other] table (defined: m)"]


def test_an_exclusion_naming_a_value_not_on_its_axis_is_an_error():
    out = problems(BASE + '\n[[exclude]]\nbatch_size = 64\nreason = "too big"\n')
    assert len(out) == 1 and out[0].startswith("exp.toml:16: exclude[0].batch_size: 64 is not "
                                               "a value of the batch_size axis")


def test_an_exclusion_without_a_reason_is_an_error():
    out = problems(BASE + '\n[[exclude]]\nbatch_size = 4\n')
    assert out == ["exp.toml:15: exclude[0].reason: required key is missing"]


def test_an_unknown_runtime_option_is_named_with_the_options_it_takes():
    out = problems(BASE + '\n[runtimes.llamacpp]\noptions = { thread = 1 }\n')
    assert len(out) == 1
    assert out[0].startswith("exp.toml:16: runtimes.llamacpp.options.thread: runtime "
                             "'llamacpp' takes no option 'thread' (options: ")
    assert "threads" in out[0]


def test_a_bad_slo_key_is_named():
    out = problems(BASE + '\n[slo]\nttft_p100_ms = 5\n')
    assert len(out) == 1 and out[0].startswith(
        "exp.toml:16: slo.ttft_p100_ms: unknown SLO key 'ttft_p100_ms'")


def test_a_dotted_model_name_gets_a_hint_about_quoting():
    text = BASE.replace('models = ["m"]', 'models = ["l-3.1"]').replace(
        "[models.m]", '[models.l-3.1]\nsource = "x"')
    out = problems(text)
    assert any('[models."l-3.1"]' in o for o in out)  # the hint shows the quoted header
    plain = problems(BASE.replace("input_len = 32", "input_len = 32\nburstines = 2"))
    assert len(plain) == 1 and "quoted" not in plain[0]  # a typo gets no such hint


def test_invalid_toml_reports_the_parser_line():
    out = problems(BASE + "\n[load\n")
    assert len(out) == 1 and "not valid TOML" in out[0] and "line 15" in out[0]


def test_format_key_quotes_parts_that_are_not_bare_keys():
    assert format_key(("exclude", 2, "model")) == "exclude[2].model"
    assert format_key(("models", "llama-3.1-8b", "source")) == 'models."llama-3.1-8b".source'


def test_the_example_experiment_files_are_valid():
    for name in ("cpu-smoke.toml", "seed-gpu.toml"):
        exp = load_experiment(ROOT / "experiments" / name)
        assert exp.name == name.removesuffix(".toml")


def test_absurd_repetitions_are_refused_with_the_key_and_line_not_expanded():
    # Found by the experiment-file fuzz test: 10^12 repetitions used to fill all memory.
    out = problems(BASE.replace('name = "t"', 'name = "t"\nrepetitions = 1000000000000'))
    assert len(out) == 1 and out[0].startswith("exp.toml:3: experiment.repetitions: ")


def test_axes_whose_product_is_too_many_cells_are_refused_before_expansion():
    sizes = ", ".join(str(i) for i in range(1, 1001))
    out = problems(BASE.replace('name = "t"', 'name = "t"\nrepetitions = 200')
                   .replace("batch_sizes = [1, 4]", f"batch_sizes = [{sizes}]"))
    assert len(out) == 1 and "200,000 cells" in out[0] and "split the experiment" in out[0]
