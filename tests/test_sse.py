"""The SSE stream parser: token events, their times, usage and end-of-stream markers."""

import orjson

from loadgen import sse
from loadgen.sse import parse_stream


def _ev(obj) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _tok(text, finish=None):
    return _ev({"choices": [{"index": 0, "text": text, "finish_reason": finish}]})


def test_each_token_event_is_timed_by_the_read_that_completed_it():
    pieces = [_tok(" a"), _tok(" b")[:10], _tok(" b")[10:] + _tok(" c", "length"), b"data: [DONE]\n\n"]
    r = parse_stream(pieces, [1.0, 2.0, 3.0, 4.0], chat=False)
    assert r.token_times == [1.0, 3.0, 3.0]
    assert r.finish_reason == "length" and r.done and r.error is None


def test_usage_chunk_with_empty_choices_is_kept():
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    pieces = [_tok(" a"), _tok(" b", "length"), _ev({"choices": [], "usage": usage}), b"data: [DONE]\n\n"]
    r = parse_stream(pieces, [1, 2, 3, 4], chat=False)
    assert r.usage == usage and len(r.token_times) == 2


def test_chat_role_only_first_delta_is_not_a_token():
    role = _ev({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    tok = _ev({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]})
    r = parse_stream([role, tok, b"data: [DONE]\n\n"], [1, 2, 3], chat=True)
    assert r.token_times == [2]
    assert r.finish_reason == "stop"


def test_reasoning_content_counts_as_output():
    tok = _ev({"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]})
    r = parse_stream([tok], [5.0], chat=True)
    assert r.token_times == [5.0]


def test_crlf_framing_comments_and_multiline_data():
    body = (b": keep-alive comment\r\n\r\n"
            b"event: message\r\ndata: {\"choices\":[{\"text\":\"x\",\r\n"
            b"data: \"finish_reason\":null}]}\r\n\r\n"
            b"data: [DONE]\r\n\r\n")
    r = parse_stream([body], [1.0], chat=False)
    assert r.error is None and r.token_times == [1.0] and r.done


def test_malformed_json_is_an_error_naming_the_data():
    r = parse_stream([_tok(" a"), b"data: {not json\n\n"], [1, 2], chat=False)
    assert r.error is not None and "malformed" in r.error and "{not json" in r.error
    assert r.token_times == [1]


def test_error_event_mid_stream_is_reported():
    r = parse_stream([_tok(" a"), _ev({"error": {"message": "engine died"}})], [1, 2], chat=False)
    assert r.error == "server sent an error event: engine died"


def test_final_event_without_trailing_blank_line_is_parsed():
    r = parse_stream([_tok(" a") + b"data: [DONE]"], [1.0], chat=False)
    assert r.done and r.token_times == [1.0]


def test_truncated_stream_has_neither_done_nor_finish_reason():
    r = parse_stream([_tok(" a"), _tok(" b")], [1, 2], chat=False)
    assert not r.done and r.finish_reason is None and r.error is None


def test_sim_and_llamacpp_timings_are_kept_from_the_last_event_that_has_them():
    sim = _ev({"choices": [], "usage": {"completion_tokens": 1},
               "sim_timings": {"queue_s": 0.5, "prefill_s": 0.25, "decode_s": 0.0}})
    r = parse_stream([_tok(" a", "length"), sim, b"data: [DONE]\n\n"], [1, 2, 3], chat=False)
    assert r.timings_kind == "sim_timings" and r.timings["queue_s"] == 0.5
    llama = _ev({"choices": [{"text": "", "finish_reason": "length"}],
                 "timings": {"prompt_ms": 8.5, "predicted_ms": 0.75, "predicted_n": 4}})
    r = parse_stream([_tok(" a"), llama], [1, 2], chat=False)
    assert r.timings_kind == "timings" and r.timings["prompt_ms"] == 8.5


def _tok_n(text, completion_tokens=None, predicted_n=None, logprob_tokens=None):
    choice = {"index": 0, "text": text, "finish_reason": None}
    obj = {"choices": [choice]}
    if completion_tokens is not None:
        obj["usage"] = {"completion_tokens": completion_tokens}
    if predicted_n is not None:
        obj["timings"] = {"predicted_n": predicted_n}
    if logprob_tokens is not None:
        choice["logprobs"] = {"tokens": ["t"] * logprob_tokens}
    return _ev(obj)


def test_chunk_tokens_from_cumulative_continuous_usage():
    pieces = [_tok_n(" a", 1), _tok_n(" b c", 3), _tok_n(" d e", 5)]
    assert parse_stream(pieces, [1, 2, 3], chat=False).chunk_tokens() == [1, 2, 2]


def test_chunk_tokens_from_llamacpp_predicted_n_count_textless_tokens_with_the_next_chunk():
    # the second event's token produced no text (held back): its token goes with the third
    pieces = [_tok_n("v", predicted_n=1), _tok_n("", predicted_n=2), _tok_n("x y", predicted_n=4)]
    assert parse_stream(pieces, [1, 2, 3], chat=False).chunk_tokens() == [1, 3]


def test_chunk_tokens_from_logprobs_lists():
    pieces = [_tok_n(" a", logprob_tokens=1), _tok_n(" b c d", logprob_tokens=3)]
    assert parse_stream(pieces, [1, 2], chat=False).chunk_tokens() == [1, 3]


def test_no_chunk_tokens_unless_every_chunk_reports_a_consistent_count():
    assert parse_stream([_tok(" a"), _tok(" b")], [1, 2], chat=False).chunk_tokens() is None
    missing = [_tok_n(" a", 1), _tok(" b")]
    assert parse_stream(missing, [1, 2], chat=False).chunk_tokens() is None
    not_rising = [_tok_n(" a", 2), _tok_n(" b", 2)]
    assert parse_stream(not_rising, [1, 2], chat=False).chunk_tokens() is None


def _split_at(body: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(cuts)), len(body)]
    return [body[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


def test_decoding_all_events_at_once_gives_what_decoding_each_event_gives():
    import random

    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    delta = lambda d, f=None: _ev({"choices": [{"index": 0, "delta": d, "finish_reason": f}]})  # noqa: E731
    streams = [
        (False, b"".join([_tok(" a"), _tok(""), _tok(" b"), _tok(" c", "length"),
                          _ev({"choices": [], "usage": usage}), b"data: [DONE]\n\n"])),
        (False, b"".join([_tok(" a"), _ev({"error": {"message": "boom"}}), _tok(" b")])),
        (False, b"".join([_tok(" a"), b"data: 7\n\n", b"data: [DONE]\n\n", _tok(" late")])),
        (False, b"".join([_tok(" a"), b"data: {not json\n\n", _tok(" b")])),
        (False, b": comment\r\n\r\n" + _tok(" a").replace(b"\n", b"\r\n")),
        (True, b"".join([delta({"role": "assistant", "content": ""}), delta({"content": "hi"}),
                         delta({"reasoning_content": "hmm"}), delta({}, "stop"),
                         _ev({"choices": [], "usage": usage}), b"data: [DONE]\n\n"])),
    ]
    rng = random.Random(3)
    for chat, body in streams:
        for _ in range(25):
            pieces = _split_at(body, [rng.randrange(1, len(body)) for _ in range(rng.randrange(0, 6))])
            times = [float(i) for i in range(len(pieces))]
            assert parse_stream(pieces, times, chat) == parse_stream(pieces, times, chat, batch=False)


def test_two_json_values_in_one_event_are_malformed_not_two_events():
    r = parse_stream([b'data: {"choices":[]},{"choices":[]}\n\n', b"data: [DONE]\n\n"], [1, 2], chat=False)
    assert r.error is not None and "malformed SSE data in event 1" in r.error


def test_a_plain_stream_takes_the_fast_path_and_agrees_with_the_reference():
    # what vLLM sends: one event per read, usage in the last event before [DONE]
    events = [_tok(f" t{i}") for i in range(20)] + [_tok(" end", "length")]
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":21}}\n\n'
    pieces = [*events, usage, b"data: [DONE]\n\n"]
    times = [0.01 * i for i in range(len(pieces))]
    assert sse._plain_stream(pieces, times) is not None  # the fast path, not the fallback
    fast = parse_stream(pieces, times, chat=False)
    assert fast == parse_stream(pieces, times, chat=False, batch=False)
    assert fast.token_times == times[:21] and fast.done and fast.n_events == 23
    assert fast.usage == {"prompt_tokens": 3, "completion_tokens": 21}
    assert fast.finish_reason == "length"
    # an error event in the middle is left to the reference loop, which names it
    bad = [*events[:3], b'data: {"error":{"message":"engine died"}}\n\n']
    assert parse_stream(bad, times[:4], chat=False).error == \
        "server sent an error event: engine died"
