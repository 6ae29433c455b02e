"""Bad experiment files, fuzzed (hypothesis; issue 8): the matrix's parser (loadgen/matrix/
spec.py) returns an Experiment or an ExperimentError naming the file (and the key and line
where it can), never another exception or a hang; expanding a valid file stays bounded."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.matrix.spec import Experiment, ExperimentError, parse_text

FUZZ = settings(max_examples=150, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])
SMOKE = (Path(__file__).resolve().parent.parent / "experiments" / "cpu-smoke.toml").read_text()
FILE = "fuzz.toml"


def _parse(text: str) -> None:
    """Either a valid Experiment of exactly this text, or an ExperimentError naming the file."""
    try:
        exp = parse_text(text, FILE)
    except ExperimentError as e:
        assert str(e).startswith(f"{FILE}: ") and e.problems
    else:
        assert isinstance(exp, Experiment) and exp.text == text and exp.name


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text_is_an_experiment_error_naming_the_file(text):
    _parse(text)


@FUZZ
@given(st.integers(min_value=0), st.text(max_size=30))
def test_text_spliced_into_a_valid_file_is_parsed_or_named(at, junk):
    k = at % (len(SMOKE) + 1)
    _parse(SMOKE[:k] + junk + SMOKE[k:])


TOML_SCALARS = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                         st.text(max_size=10), st.booleans())
TOML_VALUES = st.one_of(TOML_SCALARS, st.lists(TOML_SCALARS, max_size=4),
                        st.dictionaries(st.text(min_size=1, max_size=6), TOML_SCALARS, max_size=3))


def _dump(obj) -> str:
    """A tiny TOML writer for tables of scalars/lists/inline tables (enough for these files)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return "nan" if v != v else ("inf" if v == float("inf") else
                                         "-inf" if v == float("-inf") else repr(v))
        if isinstance(v, str):
            return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {val(x)}' for k, x in v.items()) + "}"
        raise TypeError(type(v))

    out = []
    for table, body in obj.items():
        if isinstance(body, dict):
            out.append(f'["{table}"]')
            out += [f'"{k}" = {val(v)}' for k, v in body.items()]
        else:
            out.insert(0, f'"{table}" = {val(body)}')
    return "\n".join(out) + "\n"


@FUZZ
@given(st.data())
def test_one_value_of_a_valid_file_changed_is_parsed_or_named(data):
    raw = tomllib.loads(SMOKE)
    tables = [t for t, b in raw.items() if isinstance(b, dict) and b]
    table = data.draw(st.sampled_from(tables))
    key = data.draw(st.sampled_from(sorted(raw[table])))
    raw[table][key] = data.draw(TOML_VALUES)
    try:
        text = _dump(raw)
        tomllib.loads(text)
    except (TypeError, tomllib.TOMLDecodeError):
        return  # a nested table this writer does not emit
    _parse(text)
