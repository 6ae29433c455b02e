"""The PyTorch server's HTTP front end, in process (aiohttp test server) on the tiny model:
the OpenAI wire format, token counts, the chat template and request errors."""

from __future__ import annotations

import asyncio

import orjson
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from servers.models.hf_tiny import cached_tiny_hf  # noqa: E402
from servers.pytorch.app import Detokenizer, ServerConfig, make_app  # noqa: E402
from servers.pytorch.engine import Engine  # noqa: E402

NAME = "tiny"


@pytest.fixture(scope="module")
def loaded():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cached_tiny_hf("tiny")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    return model, tok


def _call(loaded, requests: list[tuple[str, dict]], max_len: int = 2048) -> list[tuple[int, bytes]]:
    """POST each (path, body) to a fresh app, concurrently; [(status, body bytes)]."""
    model, tok = loaded

    async def go():
        engine = Engine(model, [tok.eos_token_id], max_batch=4, threads=1)
        app = make_app(engine, tok, ServerConfig(NAME, max_len, {"server": "test"}))
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            async def one(path, body):
                r = await client.post(path, data=orjson.dumps(body))
                return r.status, await r.read()
            return await asyncio.gather(*(one(p, b) for p, b in requests))

    return asyncio.run(go())


def _events(raw: bytes) -> list:
    out = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def test_a_stream_has_one_chunk_per_token_then_usage_then_done(loaded):
    body = {"model": NAME, "prompt": "the time of people", "max_tokens": 7, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True, "min_tokens": 7}
    [(status, raw)] = _call(loaded, [("/v1/completions", body)])
    assert status == 200
    events = _events(raw)
    assert events[-1] == "[DONE]"
    tokens, usage = events[:-2], events[-2]
    assert len(tokens) == 7 and all(t["choices"][0]["text"] for t in tokens)
    assert [t["choices"][0]["finish_reason"] for t in tokens] == [None] * 6 + ["length"]
    prompt_ids = loaded[1]("the time of people").input_ids
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": len(prompt_ids), "completion_tokens": 7,
                              "total_tokens": len(prompt_ids) + 7}
    assert usage["pytorch_stats"]["batch_max"] == 1


def test_the_usage_chunk_reports_queue_prefill_and_decode_times(loaded):
    body = {"model": NAME, "prompt": "the time of people", "max_tokens": 6, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True, "min_tokens": 6}
    [(_, raw)] = _call(loaded, [("/v1/completions", body)])
    usage = _events(raw)[-2]
    t = usage["server_timings"]
    assert set(t) == {"queue_s", "prefill_s", "decode_s"}
    assert t["prefill_s"] > 0 and t["decode_s"] > 0 and 0 <= t["queue_s"] < 1.0
    # the three are consecutive intervals of the request's time inside the server
    assert t["queue_s"] + t["prefill_s"] + t["decode_s"] == pytest.approx(
        usage["pytorch_stats"]["total_s"], abs=1e-5)


def test_concurrent_requests_share_a_batch_and_keep_their_own_text(loaded):
    bodies = [{"model": NAME, "prompt": p, "max_tokens": 12, "ignore_eos": True}
              for p in ("one two three", "the model of the server", "a")]
    alone = [orjson.loads(_call(loaded, [("/v1/completions", b)])[0][1]) for b in bodies]
    together = [orjson.loads(raw) for _, raw in _call(loaded, [("/v1/completions", b)
                                                               for b in bodies])]
    assert [r["choices"][0]["text"] for r in together] == \
        [r["choices"][0]["text"] for r in alone]
    assert max(r["pytorch_stats"]["batch_max"] for r in together) >= 2
    assert all(r["usage"]["completion_tokens"] == 12 for r in together)


def test_chat_prompts_go_through_the_models_chat_template(loaded):
    messages = [{"role": "user", "content": "hello there"}]
    body = {"model": NAME, "messages": messages, "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}}
    [(status, raw)] = _call(loaded, [("/v1/chat/completions", body)])
    events = _events(raw)
    tok = loaded[1]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>\nhello there</s>\n<|assistant|>\n"
    assert status == 200
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-2]["usage"]["prompt_tokens"] == len(tok(text, add_special_tokens=False)
                                                       .input_ids)
    assert events[-2]["usage"]["completion_tokens"] == 3


def test_request_errors_name_the_field(loaded):
    results = _call(loaded, [
        ("/v1/completions", {"model": "other", "prompt": "x"}),
        ("/v1/completions", {"model": NAME, "prompt": "the time", "max_tokens": 40}),
        ("/v1/completions", {"model": NAME, "prompt": [5, 99999]}),
    ], max_len=32)
    (s404, b404), (s_len, b_len), (s_ids, b_ids) = results
    assert s404 == 404 and orjson.loads(b404)["error"]["param"] == "model"
    assert s_len == 400 and orjson.loads(b_len)["error"]["param"] == "max_tokens"
    assert "32" in orjson.loads(b_len)["error"]["message"]
    assert s_ids == 400 and orjson.loads(b_ids)["error"]["param"] == "prompt"


def test_detokenizer_emits_text_deltas_that_add_up_to_the_decoded_text(loaded):
    tok = loaded[1]
    ids = tok("Hello there, people of the world: 42 times!").input_ids
    detok = Detokenizer(tok)
    assert "".join(detok.push(i) for i in ids) == tok.decode(ids)


def test_a_client_that_leaves_mid_stream_frees_its_batch_row(loaded):
    model, tok = loaded

    async def go():
        engine = Engine(model, [tok.eos_token_id], max_batch=4, threads=1)
        app = make_app(engine, tok, ServerConfig(NAME, 4096, {}))
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            body = {"model": NAME, "prompt": "the", "max_tokens": 2000, "stream": True,
                    "ignore_eos": True}
            r = await client.post("/v1/completions", data=orjson.dumps(body))
            await r.content.readuntil(b"\n\n")  # the first token arrived
            r.close()  # the client goes away
            for _ in range(500):  # up to 5 s
                if engine.counters.requests_aborted:
                    break
                await asyncio.sleep(0.01)
            return engine.counters, engine.num_running

    counters, running = asyncio.run(go())
    assert counters.requests_aborted == 1 and counters.requests_finished == 0
    assert running == 0
    assert counters.generation_tokens < 2000
