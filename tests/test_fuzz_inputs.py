"""Bad input, fuzzed (hypothesis): the SSE parser, the trace readers, the plan reader, flags.

Each must either succeed or raise its own error type whose message names the input; never
another exception, never a hang (hypothesis' per-example deadline bounds the time).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arrivals.plan import PlanError, plan_bytes, read_plan
from arrivals.traces import read_trace
from arrivals.traces.trace import TraceFormatError
from arrivals.workload import synthetic_workload
from loadgen.flags import UsageError, _header, _json_obj, _positive_float, _positive_int
from loadgen.sse import parse_stream

FUZZ = settings(max_examples=200, deadline=10_000,  # a hang fails; a busy machine does not
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


# -- SSE parser ----------------------------------------------------------------------------

def _stream(texts: list[str], finish: str | None, crlf: bool) -> bytes:
    nl = b"\r\n" if crlf else b"\n"
    out = b""
    for i, t in enumerate(texts):
        fr = finish if i == len(texts) - 1 else None
        out += b"data: " + orjson.dumps({"choices": [{"index": 0, "text": t,
                                                      "finish_reason": fr}]}) + nl + nl
    return out + b"data: [DONE]" + nl + nl


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=30))
def test_sse_parser_never_raises_on_arbitrary_bytes(pieces):
    times = [float(i) for i in range(len(pieces))]
    r = parse_stream(pieces, times, chat=False)
    assert set(r.token_times) <= set(times)
    assert r.error is None or isinstance(r.error, str)
    parse_stream(pieces, times, chat=True)


@FUZZ
@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=40),
       st.lists(st.integers(min_value=0, max_value=10**6), max_size=40), st.booleans())
def test_sse_events_do_not_depend_on_how_the_bytes_were_split(texts, cuts, crlf):
    data = _stream(texts, "length", crlf)
    whole = parse_stream([data], [1.0], chat=False)
    pieces = _split(data, cuts)
    times = [float(i) for i in range(len(pieces))]
    split = parse_stream(pieces, times, chat=False)
    assert whole.error is None and split.error is None
    assert len(split.token_times) == len(whole.token_times) == len(texts)
    assert split.token_times == sorted(split.token_times)
    assert split.done and split.finish_reason == "length"


@FUZZ
@given(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=10),
       st.integers(min_value=0), st.binary(min_size=1, max_size=40))
def test_sse_garbage_spliced_into_a_stream_is_an_error_or_ignored(texts, at, junk):
    data = _stream(texts, "stop", False)
    k = at % (len(data) + 1)
    r = parse_stream([data[:k] + junk + data[k:]], [1.0], chat=False)
    assert r.error is None or ("SSE" in r.error or "server sent" in r.error)


# -- trace readers -------------------------------------------------------------------------

FORMATS = [("burstgpt", None), ("azure", None), ("mooncake", None),
           ("csv", {"time": "t", "input": "i", "output": "o"}),
           ("jsonl", {"time": "t", "input": "i", "output": "o"})]


def _write(data: bytes, suffix: str) -> Path:
    f = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)  # noqa: SIM115
    f.write(data)
    f.close()
    return Path(f.name)


@pytest.mark.parametrize(("fmt", "cols"), FORMATS)
@FUZZ
@given(data=st.binary(max_size=2000))
def test_trace_readers_reject_garbage_with_an_error_naming_the_file(fmt, cols, data):
    p = _write(data, ".trace")
    try:
        tr = read_trace(p, fmt, columns=cols)
    except TraceFormatError as e:
        assert str(p) in str(e)
    else:
        assert len(tr) >= 1 and all(math.isfinite(x) for x in tr.t.tolist())
    finally:
        p.unlink()


CELL = st.one_of(st.integers(-10, 10**12).map(str), st.floats(allow_nan=True).map(str),
                 st.text(max_size=8), st.just(""), st.just("nan"), st.just("inf"))


@FUZZ
@given(st.lists(st.tuples(CELL, CELL, CELL), min_size=1, max_size=30))
def test_generic_csv_trace_with_odd_cells_reads_or_names_the_line(rows):
    body = "t,i,o\n" + "".join(f"{a},{b},{c}\n" for a, b, c in
                               ((x.replace(",", ";").replace("\n", " ").replace("\r", " ")
                                 .replace('"', "'"), y.replace(",", ";").replace("\n", " ")
                                 .replace("\r", " ").replace('"', "'"),
                                 z.replace(",", ";").replace("\n", " ").replace("\r", " ")
                                 .replace('"', "'")) for x, y, z in rows))
    p = _write(body.encode(), ".csv")
    try:
        tr = read_trace(p, "csv", columns={"time": "t", "input": "i", "output": "o"})
    except TraceFormatError as e:
        assert str(p) in str(e) and (e.line is None or e.line >= 1)
    else:
        assert len(tr) == len(rows) and (tr.input_tokens >= 0).all()
    finally:
        p.unlink()


# -- plan reader ---------------------------------------------------------------------------

def _plan() -> bytes:
    return plan_bytes(synthetic_workload(num_requests=5, request_rate=10.0, input_len=4,
                                         output_len=3, seed=1))


@FUZZ
@given(st.binary(max_size=3000))
def test_plan_reader_rejects_garbage_with_an_error_naming_the_file(data):
    p = _write(data, ".jsonl")
    try:
        read_plan(p)
    except PlanError as e:
        assert str(p) in str(e)
    finally:
        p.unlink()


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=5)


@FUZZ
@given(st.integers(min_value=1, max_value=5),
       st.sampled_from(["i", "t_intended", "prompt", "input_tokens", "output_tokens", "item_id"]),
       JSON_VALUES)
def test_a_plan_with_one_field_changed_reads_or_names_the_line(line, key, value):
    lines = _plan().splitlines()
    rec = orjson.loads(lines[line])
    rec[key] = value
    try:
        lines[line] = orjson.dumps(rec)
    except TypeError:
        return
    p = _write(b"\n".join(lines) + b"\n", ".jsonl")
    try:
        wl = read_plan(p)
    except PlanError as e:
        assert f"{p}:" in str(e)
    else:
        assert len(wl) == 5
    finally:
        p.unlink()


# -- flag values ---------------------------------------------------------------------------

@FUZZ
@given(st.text(max_size=30))
def test_numeric_flags_parse_or_reject_with_the_flag_named(s):
    for parse, valid in ((_positive_float("--request-rate", allow_inf=True),
                          lambda v: v > 0 and not math.isnan(v)),
                         (_positive_float("--timeout"), lambda v: 0 < v < math.inf),
                         (_positive_int("--num-prompts"), lambda v: v >= 1)):
        try:
            v = parse(s)
        except argparse.ArgumentTypeError as e:
            assert str(e).startswith("--")
        else:
            assert valid(v)


@FUZZ
@given(st.text(max_size=40))
def test_header_and_extra_body_flags_parse_or_reject(s):
    for parse in (_header, _json_obj):
        try:
            parse(s)
        except argparse.ArgumentTypeError as e:
            assert str(e).startswith("--")


@FUZZ
@given(rate=st.one_of(st.floats(min_value=1e-300, max_value=1e300), st.just(math.inf)),
       n=st.integers(min_value=1, max_value=10**12),
       input_len=st.integers(min_value=1, max_value=10**12),
       burstiness=st.floats(min_value=1e-300, max_value=1e300))
def test_absurd_workload_flags_give_a_bounded_workload_or_a_usage_error(rate, n, input_len,
                                                                         burstiness):
    from loadgen.cli import build_parser
    from loadgen.workload_flags import build_workload

    n = n if n <= 200 or n > 10**9 else 200  # small ones are built; huge ones must be refused
    argv = ["plan", "-o", "/dev/null", "--request-rate", repr(rate), "--num-prompts", str(n),
            "--random-input-len", str(input_len if input_len <= 64 or input_len > 10**9 else 64),
            "--random-output-len", "4", "--burstiness", repr(burstiness)]
    ns = build_parser().parse_args(argv)
    try:
        wl = build_workload(ns)
    except UsageError as e:
        assert "memory" in str(e) or "days" in str(e) or "--" in str(e)
    else:
        assert len(wl) == n and wl.duration <= 30 * 86400
# events a plain stream may carry: well-formed ones of every kind the parser reads, and the
# odd ones the fast path must hand to the reference loop (error events, wrong types, bad JSON)
_EVENTS = [
    b'{"choices":[{"index":0,"text":" a","finish_reason":null,"logprobs":null}]}',
    b'{"choices":[{"index":0,"text":"","finish_reason":null}]}',
    b'{"choices":[{"index":0,"text":" b","finish_reason":"length"}]}',
    b'{"choices":[{"index":0,"delta":{"content":"hi"}}]}',
    b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
    b'{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"},"finish_reason":"stop"}]}',
    b'{"choices":[{"index":0,"delta":"oops"}]}',
    b'{"choices":[{"index":0,"text":" c","logprobs":{"tokens":["x","y"],"content":["x"]}}]}',
    b'{"choices":[{"index":0,"text":" d"}],"usage":{"completion_tokens":5}}',
    b'{"choices":[{"index":0,"text":" e"}],"timings":{"predicted_n":3,"prompt_ms":1.5}}',
    b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}',
    b'{"choices":[],"sim_timings":{"queue_s":0.1,"prefill_s":0.2,"decode_s":0.3}}',
    b'{"choices":[],"server_timings":"not an object"}',
    b'{"choices":[],"usage":7}',
    b'{"choices":{"0":1}}',
    b'{"choices":[7]}',
    b'{"error":{"message":"boom"}}',
    b'[1,2]', b'7', b'{not json', b'', b'{"choices":[]},{"choices":[]}', b'[DONE]',
]


@FUZZ
@given(st.lists(st.sampled_from(_EVENTS), max_size=25),
       st.lists(st.integers(min_value=0, max_value=10**6), max_size=8), st.booleans())
def test_the_plain_stream_fast_path_gives_what_the_reference_loop_gives(events, cuts, chat):
    data = b"".join(b"data: " + e + b"\n\n" for e in events)
    pieces = _split(data, cuts) or [b""]
    times = [float(i) for i in range(len(pieces))]
    assert parse_stream(pieces, times, chat) == parse_stream(pieces, times, chat, batch=False)
