"""The OpenAI client keeps what servers report per request: timings and per-chunk token counts."""

import math

import orjson
import pytest

from loadgen.clients.openai import ClientConfig, _finish_json, _finish_stream, build_body
from loadgen.records import Record


def _ev(obj) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _tok(text, finish=None, **extra):
    return _ev({"choices": [{"index": 0, "text": text, "finish_reason": finish}], **extra})


DONE = b"data: [DONE]\n\n"


def test_sim_timings_fill_queue_prefill_and_decode():
    rec = Record(request_id=0)
    final = _ev({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                 "sim_timings": {"queue_s": 0.125, "prefill_s": 0.0625, "decode_s": 0.25}})
    _finish_stream(rec, [_tok(" a"), _tok(" b", "length"), final, DONE], [1, 2, 3, 4], chat=False)
    assert rec.status == "ok"
    assert (rec.server_queue_s, rec.server_prefill_s, rec.server_decode_s) == (0.125, 0.0625, 0.25)
    assert rec.chunk_tokens is None  # the server said nothing per chunk


def test_llamacpp_timings_give_prefill_and_decode_and_no_queue():
    rec = Record(request_id=0)
    final = _tok("", "length", usage={"prompt_tokens": 6, "completion_tokens": 4},
                 timings={"prompt_n": 6, "prompt_ms": 8.5, "predicted_n": 4, "predicted_ms": 0.75})
    _finish_stream(rec, [_tok("x"), _tok("y"), final, DONE], [1, 2, 3, 4], chat=False)
    assert rec.server_prefill_s == pytest.approx(0.0085)
    assert rec.server_decode_s == pytest.approx(0.00075)
    assert math.isnan(rec.server_queue_s)


def test_server_timings_of_a_non_streamed_body():
    rec = Record(request_id=0, t_done=2.0)
    body = orjson.dumps({"choices": [{"text": " a b", "finish_reason": "length"}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 2},
                         "server_timings": {"queue_s": 0.5, "prefill_s": 0.25, "decode_s": -1}})
    _finish_json(rec, body, chat=False)
    assert (rec.server_queue_s, rec.server_prefill_s) == (0.5, 0.25)
    assert math.isnan(rec.server_decode_s)  # a negative time is not believed


def test_continuous_usage_gives_each_chunks_token_count():
    rec = Record(request_id=0)
    pieces = [_tok(" a", usage={"completion_tokens": 1}), _tok(" b c", usage={"completion_tokens": 3}),
              _tok(" d", "length", usage={"completion_tokens": 4}), DONE]
    _finish_stream(rec, pieces, [1, 2, 3, 4], chat=False)
    assert rec.chunk_tokens == [1, 2, 1] and rec.output_tokens == 4 and rec.n_chunks == 3


def test_continuous_usage_flag_asks_for_usage_in_every_chunk():
    body = orjson.loads(build_body(ClientConfig("http://x", "m", continuous_usage=True), "p", 4))
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    plain = orjson.loads(build_body(ClientConfig("http://x", "m"), "p", 4))
    assert plain["stream_options"] == {"include_usage": True}
