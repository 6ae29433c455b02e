"""The tiny GGUF maker: a valid llama-architecture file with a byte-fallback SentencePiece vocab.

These read the written file back with the ``gguf`` package (no server). That llama.cpp really
loads, tokenizes with and runs these models is checked by tests/test_llamacpp_e2e.py.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from loadgen.cli import main  # noqa: E402
from servers.models.gguf_tiny import (  # noqa: E402
    BYTE,
    CONTROL,
    NORMAL,
    SIZES,
    SPACE,
    build_vocab,
    param_count,
    write_tiny_gguf,
)


def _field(reader, key: str):
    f = reader.fields[key]
    return f.contents()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_gguf(path, "tiny", seed=0)
    return path, gguf.GGUFReader(path)


def test_vocab_has_all_256_byte_tokens_in_order_for_byte_fallback():
    tokens, _, types = build_vocab()
    assert tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert all(t == BYTE for t in types[3:259])
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and types[1:3] == [CONTROL, CONTROL]


def test_every_word_piece_is_reachable_by_merging_pieces_of_the_vocab():
    tokens, scores, types = build_vocab()
    vocab = set(tokens)
    pieces = [t for t, ty in zip(tokens, types, strict=True) if ty == NORMAL]
    assert len(pieces) == len(set(pieces))  # no duplicate pieces
    for p in pieces:
        if len(p) > 1:
            assert p[:-1] in vocab and p[-1] in vocab, p
    by = dict(zip(tokens, scores, strict=True))
    assert by[SPACE + "the"] > by[SPACE + "th"] > by[SPACE + "t"]  # longer merges first


def test_tiny_file_is_a_few_hundred_kb_with_the_declared_hyperparameters(tiny):
    path, r = tiny
    cfg = SIZES["tiny"]
    assert 100_000 < path.stat().st_size < 1_000_000
    assert _field(r, "general.architecture") == "llama"
    assert _field(r, "llama.embedding_length") == cfg.n_embd
    assert _field(r, "llama.block_count") == cfg.n_layer
    assert _field(r, "llama.attention.head_count_kv") == cfg.n_head_kv
    assert _field(r, "tokenizer.ggml.model") == "llama"
    assert _field(r, "tokenizer.ggml.bos_token_id") == 1
    assert _field(r, "tokenizer.ggml.eos_token_id") == 2
    assert "<|im_start|>" in _field(r, "tokenizer.chat_template")
    assert len(_field(r, "tokenizer.ggml.tokens")) == len(build_vocab()[0])


def test_tensor_names_and_gguf_shapes_follow_llama_conventions(tiny):
    _, r = tiny
    cfg = SIZES["tiny"]
    n_vocab = len(build_vocab()[0])
    kv = cfg.n_head_kv * cfg.head_dim
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}
    # GGUF lists ne0 (the input dimension) first.
    assert shapes["token_embd.weight"] == (cfg.n_embd, n_vocab)
    assert shapes["output.weight"] == (cfg.n_embd, n_vocab)
    assert shapes["output_norm.weight"] == (cfg.n_embd,)
    for i in range(cfg.n_layer):
        assert shapes[f"blk.{i}.attn_q.weight"] == (cfg.n_embd, cfg.n_embd)
        assert shapes[f"blk.{i}.attn_k.weight"] == (cfg.n_embd, kv)
        assert shapes[f"blk.{i}.attn_v.weight"] == (cfg.n_embd, kv)
        assert shapes[f"blk.{i}.ffn_gate.weight"] == (cfg.n_embd, cfg.n_ff)
        assert shapes[f"blk.{i}.ffn_down.weight"] == (cfg.n_ff, cfg.n_embd)
    assert len(shapes) == 2 + 1 + 9 * cfg.n_layer
    assert sum(int(np.prod(s)) for s in shapes.values()) == param_count(cfg, n_vocab)


def test_same_seed_writes_identical_bytes_and_another_seed_other_weights(tmp_path):
    a, b, c = (write_tiny_gguf(tmp_path / f"{n}.gguf", "tiny", seed=s)
               for n, s in (("a", 1), ("b", 1), ("c", 2)))
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b, c)]
    assert digest[0] == digest[1] != digest[2]


def test_small_size_has_about_25_million_parameters():
    n = param_count(SIZES["small"], len(build_vocab()[0]))
    assert 20e6 < n < 30e6


def test_unknown_size_is_rejected_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="tiny, small"):
        write_tiny_gguf(tmp_path / "x.gguf", "huge")


def test_make_tiny_command_writes_the_model(tmp_path, capsys):
    out = tmp_path / "m" / "tiny.gguf"
    assert main(["models", "make-tiny", "--format", "gguf", "--size", "tiny", str(out)]) == 0
    assert gguf.GGUFReader(out).fields["general.architecture"].contents() == "llama"
    assert "M parameters" in capsys.readouterr().out
