"""The sim's pure parts: performance model, tokenizer, config, request parsing, encoding."""

from __future__ import annotations

import argparse

import orjson
import pytest

from servers.sim.cli import add_arguments, config_from_args
from servers.sim.config import SimConfig
from servers.sim.faults import choose_fault, error_body, fault_error, good_tokens
from servers.sim.model import (
    SimCosts,
    count_chat_tokens,
    count_prompt_tokens,
    predict_isolated,
    step_time,
)
from servers.sim.request import DEFAULT_MAX_TOKENS, RequestError, parse_request
from servers.sim.response import StreamEncoder, completion_body
from servers.sim.tokens import VOCAB, WORD_TEXT, TokenStream


def test_default_costs_are_the_documented_ones() -> None:
    assert SimCosts().as_dict() == {
        "step_base": 0.006, "step_per_seq": 0.00025, "prefill_per_token": 0.00002,
    }


def test_step_time_is_linear_in_batch_and_prefill_tokens() -> None:
    costs = SimCosts()
    assert step_time(costs, 1, 0) == pytest.approx(0.00625)
    assert step_time(costs, 16, 0) == pytest.approx(0.006 + 16 * 0.00025)
    assert step_time(costs, 4, 1000) == pytest.approx(0.006 + 0.001 + 0.02)


def test_predict_isolated_gives_ttft_itl_e2e() -> None:
    costs = SimCosts(step_base=0.010)
    p = predict_isolated(costs, input_tokens=200, output_tokens=20)
    assert p["ttft"] == pytest.approx(0.010 + 0.00025 + 200 * 0.00002)  # 14.25 ms
    assert p["itl"] == pytest.approx(0.01025)
    assert p["e2e"] == pytest.approx(0.01425 + 19 * 0.01025)
    assert predict_isolated(costs, 0, 1)["e2e"] == pytest.approx(0.01025)


@pytest.mark.parametrize(("input_tokens", "output_tokens", "name"),
                         [(-1, 1, "input_tokens"), (1, 0, "output_tokens")])
def test_predict_isolated_names_the_bad_argument(input_tokens: int, output_tokens: int,
                                                 name: str) -> None:
    with pytest.raises(ValueError, match=name):
        predict_isolated(SimCosts(), input_tokens, output_tokens)


@pytest.mark.parametrize("field", ["step_base", "step_per_seq", "prefill_per_token"])
def test_negative_or_nan_cost_is_refused_by_name(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SimCosts(**{field: -0.001})
    with pytest.raises(ValueError, match=field):
        SimCosts(**{field: float("nan")})


def test_tokenizer_counts_whitespace_separated_words() -> None:
    assert count_prompt_tokens("") == 0
    assert count_prompt_tokens("  hello,  world\n\tagain ") == 3
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one two three"},
                                     {"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": None},
    ]
    assert count_chat_tokens(messages) == 5


def test_generated_text_counts_one_token_per_token() -> None:
    assert all(count_prompt_tokens(t) == 1 and t == " " + w for t, w in zip(WORD_TEXT, VOCAB, strict=True))
    assert count_prompt_tokens(TokenStream(0, 0).text(1000)) == 1000


def test_token_stream_depends_only_on_seed_and_request_number() -> None:
    a, b = TokenStream(3, 5), TokenStream(3, 5)
    late = [b.word(k) for k in range(600)]  # read in another order and extent
    assert [a.word(k) for k in range(600)] == late
    assert a.fault_draw == b.fault_draw and a.eos_draw(300) == b.eos_draw(300)
    assert TokenStream(3, 6).text(50) != a.text(50)
    assert TokenStream(4, 5).text(50) != a.text(50)


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", 70000), ("max_batch", 0), ("seed", -1), ("eos_prob", 1.5), ("fault_rate", -0.1),
     ("fault_kind", "explode"), ("fault_stall_s", -1.0), ("model", ""), ("host", "")],
)
def test_config_refuses_bad_field_by_name(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"SimConfig.{field}"):
        SimConfig(**{field: value})


def test_cli_flags_map_to_config_in_seconds() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args([
        "--port", "0", "--model", "m", "--max-batch-size", "3", "--step-base-ms", "10",
        "--step-per-seq-ms", "0.5", "--prefill-per-token-ms", "0.01", "--seed", "9",
        "--eos-prob", "0.1", "--fault-rate", "0.2", "--fault-kind", "stall",
        "--fault-stall-s", "2",
    ])
    config = config_from_args(ns)
    assert config == SimConfig(
        port=0, model="m", max_batch=3,
        costs=SimCosts(step_base=0.010, step_per_seq=0.0005, prefill_per_token=0.00001),
        seed=9, eos_prob=0.1, fault_rate=0.2, fault_kind="stall", fault_stall_s=2.0,
    )
    assert config_from_args(parser.parse_args([])) == SimConfig()


def test_cli_bad_flag_value_names_the_field() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ValueError, match="max_batch"):
        config_from_args(parser.parse_args(["--max-batch-size", "0"]))


def _parse(body: object, chat: bool = False):  # noqa: ANN202 - test helper
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_request(raw, chat=chat, served_model="sim-llm")


def test_completions_request_defaults_and_prompt_forms() -> None:
    req = _parse({"model": "sim-llm", "prompt": "a b c"})
    assert (req.prompt_tokens, req.max_tokens, req.stream, req.include_usage) == (3, 16, False,
                                                                                  False)
    assert DEFAULT_MAX_TOKENS == 16
    assert _parse({"prompt": ["a b"], "max_tokens": 5}).prompt_tokens == 2
    assert _parse({"prompt": [1, 2, 3, 4]}).prompt_tokens == 4
    streamed = _parse({"prompt": "x", "stream": True, "stream_options": {"include_usage": True},
                       "ignore_eos": True, "min_tokens": 2, "max_tokens": 4})
    assert (streamed.stream, streamed.include_usage, streamed.ignore_eos,
            streamed.min_tokens) == (True, True, True, 2)


def test_chat_prefers_max_completion_tokens() -> None:
    req = _parse({"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3,
                  "max_completion_tokens": 7}, chat=True)
    assert (req.prompt_tokens, req.max_tokens, req.chat) == (2, 7, True)


@pytest.mark.parametrize(
    ("body", "chat", "status", "param"),
    [
        (b"{not json", False, 400, None),
        ([1, 2], False, 400, None),
        ({"max_tokens": 3}, False, 400, "prompt"),
        ({"prompt": {"a": 1}}, False, 400, "prompt"),
        ({"max_tokens": 3}, True, 400, "messages"),
        ({"messages": [{"content": "no role"}]}, True, 400, "messages"),
        ({"prompt": "x", "max_tokens": 0}, False, 400, "max_tokens"),
        ({"prompt": "x", "max_tokens": "5"}, False, 400, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -1}, True,
         400, "max_completion_tokens"),
        ({"prompt": "x", "max_tokens": 2, "min_tokens": 3}, False, 400, "min_tokens"),
        ({"prompt": "x", "stream": "yes"}, False, 400, "stream"),
        ({"prompt": "x", "n": 2}, False, 400, "n"),
        ({"prompt": "x", "model": "gpt-9"}, False, 404, "model"),
    ],
)
def test_bad_request_is_refused_with_status_and_field(body: object, chat: bool, status: int,
                                                      param: str | None) -> None:
    with pytest.raises(RequestError) as info:
        _parse(body, chat)
    assert (info.value.status, info.value.param) == (status, param)
    if param is not None:
        assert param in info.value.message


def test_wrong_model_message_is_openai_style() -> None:
    with pytest.raises(RequestError) as info:
        _parse({"prompt": "x", "model": "X"})
    body = orjson.loads(error_body(404, info.value.message, info.value.param))
    assert body["error"]["message"] == "The model `X` does not exist."
    assert (body["error"]["type"], body["error"]["code"]) == ("NotFoundError", 404)


@pytest.mark.parametrize("chat", [False, True])
def test_spliced_token_chunk_equals_orjson_of_the_chunk(chat: bool) -> None:
    enc = StreamEncoder(chat, "id-1", 1700000000, 'sim "quoted" model')
    head = {"id": "id-1", "object": "chat.completion.chunk" if chat else "text_completion",
            "created": 1700000000, "model": 'sim "quoted" model'}
    for word, finish in ((0, None), (len(VOCAB) - 1, "length"), (5, "stop")):
        content = {"delta": {"content": WORD_TEXT[word]}} if chat else {"text": WORD_TEXT[word]}
        choice = {"index": 0, **content, "logprobs": None, "finish_reason": finish}
        assert enc.token(word, finish) == b"data: " + orjson.dumps(
            {**head, "choices": [choice]}) + b"\n\n"


def test_usage_chunk_and_bodies() -> None:
    enc = StreamEncoder(True, "c", 1, "m")
    usage = orjson.loads(enc.usage(10, 4, {"queue_s": 0.0})[6:])
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    assert usage["sim_timings"] == {"queue_s": 0.0}
    role = orjson.loads(enc.role()[6:])
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    body = orjson.loads(completion_body(chat=True, rid="c", created=1, model="m", text=" a b",
                                        finish_reason="length", prompt_tokens=1,
                                        completion_tokens=2, sim_timings={}))
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": " a b"}


def test_fault_choice_and_good_tokens() -> None:
    assert choose_fault(0.3, "reset", 0.29) == "reset"
    assert choose_fault(0.3, "reset", 0.3) is None
    assert choose_fault(0.0, "reset", 0.0) is None
    assert [good_tokens(n) for n in (1, 2, 3, 100)] == [0, 1, 2, 2]
    status, headers, _ = fault_error("http429", 0)
    assert (status, headers) == (429, {"Retry-After": "1"})
    with pytest.raises(ValueError, match="stall"):
        fault_error("stall", 0)
