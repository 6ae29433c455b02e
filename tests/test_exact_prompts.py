"""Exact-length prompts: a locally trained BPE tokenizer, a /tokenize server, the fallback,
and prefix sharing from Mooncake hash_ids."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from arrivals.prompts import VOCABULARY
from arrivals.tokens import (
    ServerTokenizer,
    TokenizerError,
    exact_token_prompt,
    hash_id_prompts,
    load_tokenizer,
    prompts_for_lengths,
    server_prompts,
)

tokenizers = pytest.importorskip("tokenizers", reason="optional dependency 'tokenizers' absent")


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    """A small byte-level BPE tokenizer trained here on local text (no hub)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = np.random.default_rng(0)
    text = [" ".join(rng.choice(VOCABULARY, 40)) + ", and then." for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<s>"]))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_prompts_have_exactly_n_tokens_for_every_n_in_1_to_300(tokenizer_file):
    tok = load_tokenizer(tokenizer_file)
    rng = np.random.default_rng(1)
    counts = {}
    for n in range(1, 301):
        text, m = exact_token_prompt(tok, n, rng)
        counts[n] = tok.count(text)
        assert m == counts[n]
    assert [n for n, m in counts.items() if m != n] == []


def test_exact_prompts_for_a_folder_record_the_tokenizer_and_no_inexact_prompt(tokenizer_file):
    tok = load_tokenizer(tokenizer_file.parent)  # a folder holding tokenizer.json
    lengths = np.array([5, 64, 512, 1000])
    prompts, info = prompts_for_lengths(lengths, "tokenizer", tokenizer=tok, seed=3)
    assert [tok.count(p) for p in prompts] == lengths.tolist()
    assert info == {"prompt_tokens_from": "tokenizer", "tokenizer": str(tokenizer_file),
                    "not_exact": 0}
    again, _ = prompts_for_lengths(lengths, "tokenizer", tokenizer=tok, seed=3)
    assert again == prompts  # seeded


def test_bad_tokenizer_path_error_names_the_path(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: could not load a tokenizer"):
        load_tokenizer(bad)
    with pytest.raises(TokenizerError, match="folder has no tokenizer.json"):
        load_tokenizer(tmp_path / "..")


def test_tokenizer_source_without_a_tokenizer_is_an_error():
    with pytest.raises(TokenizerError, match="--tokenizer"):
        prompts_for_lengths(np.array([3]), "tokenizer")


# ---- /tokenize server -----------------------------------------------------------------------

class TokenizeServer:
    """A real aiohttp server on 127.0.0.1 whose /tokenize counts whitespace words.

    style="vllm" answers {"count", "tokens"}, "llama" answers {"tokens"} only.
    """

    def __init__(self, style: str = "vllm"):
        self.style, self.requests = style, 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from aiohttp import web

        async def tokenize(request: web.Request) -> web.Response:
            body = await request.json()
            self.requests += 1
            text = body.get("prompt", body.get("content"))
            toks = list(range(len(text.split())))
            js = {"tokens": toks} if self.style == "llama" else {"count": len(toks),
                                                                  "tokens": toks}
            return web.json_response(js)

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/tokenize", tokenize)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            self.stop = asyncio.Event()
            self.loop = asyncio.get_running_loop()
            self.ready.set()
            await self.stop.wait()
            await runner.cleanup()

        asyncio.run(main())

    def __enter__(self) -> TokenizeServer:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


@pytest.mark.parametrize("style", ["vllm", "llama"])
def test_server_prompts_have_exactly_the_servers_token_count(style):
    with TokenizeServer(style) as srv:
        st = ServerTokenizer(f"http://127.0.0.1:{srv.port}/v1", model="m")
        lengths = np.array([1, 7, 100, 333])
        prompts, info = server_prompts(lengths, st, seed=0)
        assert [len(p.split()) for p in prompts] == lengths.tolist()
        assert st.count_many(prompts) == lengths.tolist()
        assert info["prompt_tokens_from"] == "server" and info["not_exact"] == 0
        assert info["tokenize_url"] == f"http://127.0.0.1:{srv.port}/tokenize"


def test_unreachable_server_falls_back_to_words_and_records_why():
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    st = ServerTokenizer(f"http://127.0.0.1:{port}", timeout_s=5)
    prompts, info = prompts_for_lengths(np.array([4, 9]), "server", server=st, seed=0)
    assert [len(p.split()) for p in prompts] == [4, 9]
    assert info["prompt_tokens_from"] == "words" and info["requested"] == "server"
    assert f"127.0.0.1:{port}/tokenize" in info["fallback_reason"]


# ---- prefix sharing -------------------------------------------------------------------------

def test_equal_leading_hash_ids_share_equal_512_token_blocks(tokenizer_file):
    tok = load_tokenizer(tokenizer_file)
    ids = [[1, 2, 3], [1, 2, 9], [7, 2], [1]]
    lengths = np.array([1300, 1100, 700, 200])
    prompts, info = hash_id_prompts(ids, lengths, tokenizer=tok, seed=0)
    enc = [tok.encode(p) for p in prompts]
    assert [len(e) for e in enc] == lengths.tolist() and info["not_exact"] == 0
    assert enc[0][:1024] == enc[1][:1024]  # blocks 1 and 2 shared
    assert enc[0][1024:1100] != enc[1][1024:1100]  # block 3 vs 9
    assert enc[2][:512] != enc[0][:512]  # block 7 vs 1
    assert enc[2][512:700] == enc[0][512:700]  # same id 2, same text, in another position
    assert enc[3] == enc[0][:200]  # a partial block is the block's prefix
    assert info["distinct_blocks"] == 5 and info["reused_blocks"] == 4


def test_hash_id_prompts_in_words_pad_requests_longer_than_their_blocks():
    prompts, info = hash_id_prompts([[5], [5]], np.array([600, 3]), block_tokens=512, seed=1)
    w0, w1 = prompts[0].split(), prompts[1].split()
    assert len(w0) == 600 and w1 == w0[:3]
    assert info["prompt_tokens_from"] == "words"


# ---- CLI ------------------------------------------------------------------------------------

def _plan_ns(*args: str):
    from loadgen.cli import build_parser

    return build_parser().parse_args(["plan", "-o", "x", *args])


def test_trace_replay_with_tokenizer_gets_exact_prompts_and_records_it(tmp_path, tokenizer_file):
    from loadgen.workload_flags import build_workload

    p = tmp_path / "t.jsonl"
    rows = [{"timestamp": 1000 * i, "input_length": 30 + 5 * i, "output_length": 4,
             "hash_ids": [0, i]} for i in range(6)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tok = load_tokenizer(tokenizer_file)
    wl = build_workload(_plan_ns("--trace", str(p), "--trace-format", "mooncake",
                                 "--tokenizer", str(tokenizer_file)))
    assert [tok.count(x) for x in wl.prompts] == wl.input_tokens.tolist()
    assert wl.description["prompts"]["prompt_tokens_from"] == "tokenizer"
    assert wl.description["kind"] == "trace"
    shared = build_workload(_plan_ns("--trace", str(p), "--trace-format", "mooncake",
                                     "--hash-id-prefixes"))
    assert shared.description["prompts"]["prefix_blocks"] == "hash_ids"
    assert len({x.split()[0] for x in shared.prompts}) == 1  # all start with block 0
    assert [len(x.split()) for x in shared.prompts] == shared.input_tokens.tolist()


def test_plain_trace_replay_keeps_its_word_prompts_unchanged(tmp_path):
    from loadgen.workload_flags import build_workload

    p = tmp_path / "t.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2}\n'
                 '{"timestamp": 10, "input_length": 6, "output_length": 2}\n', encoding="utf-8")
    wl = build_workload(_plan_ns("--trace", str(p), "--trace-format", "mooncake"))
    assert "prompts" not in wl.description
    assert [len(x.split()) for x in wl.prompts] == [5, 6]


def test_a_sentencepiece_style_metaspace_tokenizer_gets_exact_prompts_too(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = np.random.default_rng(4)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([" ".join(rng.choice(VOCABULARY, 30)) + "." for _ in range(300)],
                            trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    lt = load_tokenizer(tmp_path)
    lengths = np.arange(1, 200, 3)
    prompts, info = prompts_for_lengths(lengths, "tokenizer", tokenizer=lt, seed=0)
    assert [lt.count(p) for p in prompts] == lengths.tolist() and info["not_exact"] == 0
