"""Tiny random-weight llama models in GGUF, written by our own code (no model hub needed).

The model is a valid llama-architecture GGUF that llama.cpp loads and runs: correct tensor
names and shapes, a SentencePiece-style ("llama") vocabulary with byte fallback, BOS/EOS and a
chat template. The weights are random (seeded), so the text is gibberish, but the work per
token is real: "small" (about 25 M parameters) gives realistic per-token timings on a CPU,
"tiny" (about 0.15 M) starts and answers in milliseconds.

Vocabulary (SentencePiece conventions, ``tokenizer.ggml.model = "llama"``):
    0 <unk> (UNKNOWN), 1 <s> (CONTROL, BOS), 2 </s> (CONTROL, EOS),
    3..258 <0x00>..<0xFF> (BYTE: any UTF-8 text is representable),
    then "▁" and the printable ASCII characters, then word pieces ("▁t", "▁th", "▁the", ...).
SentencePiece's BPE-style tokenizer merges the adjacent pair with the highest score whose
concatenation is in the vocabulary; every prefix of a word piece is itself a piece, so each
word is reachable by merges. A longer piece gets a higher score (merged first).

Tensor shapes are written as numpy arrays of shape (out, in); GGUF stores the reversed
dimensions (ne0 = in), which is what llama.cpp expects for ``token_embd``, ``attn_q`` etc.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1  # bump when the written bytes change (cache keys include it)

SPACE = "\u2581"  # SentencePiece's word-boundary marker "▁"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Common English words; each gives the pieces ▁w[:1], ▁w[:2], ..., ▁w.
WORDS = (
    "the of and to in is was for that on as with by he at from his it an were are which be "
    "this has also or had not first one their its new after but who they have her she two "
    "been other when there all during into school time may years more most only over city "
    "some world would where later up such used many can state about national out known "
    "university united then made these while under than being between both through since "
    "hello model token server request response latency load test benchmark language large "
    "random tiny small llama python batch slot stream word text data user assistant system"
).split()

# Token types (llama.cpp's llama_token_type / gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


@dataclass(frozen=True)
class TinyConfig:
    """Shape of a tiny llama; ``n_head_kv < n_head`` exercises grouped-query attention."""

    name: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int = 4096
    rms_eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


SIZES: dict[str, TinyConfig] = {
    # ~0.15 M parameters, ~0.3 MB: for fast tests.
    "tiny": TinyConfig("tiny", n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128),
    # ~24 M parameters, ~48 MB (F16): realistic per-token cost on a CPU.
    "small": TinyConfig("small", n_embd=512, n_layer=8, n_head=8, n_head_kv=4, n_ff=1408),
}


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, types) of the SentencePiece-style vocabulary described above."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    pieces: list[str] = [SPACE] + [chr(c) for c in range(33, 127)]
    seen = set(pieces)
    for w in WORDS:
        for k in range(1, len(w) + 1):
            p = SPACE + w[:k]
            if p not in seen:
                seen.add(p)
                pieces.append(p)
    for p in pieces:
        tokens.append(p)
        # Longer pieces are merged first; single characters score lowest.
        scores.append(-100.0 + len(p) - len(tokens) * 1e-4)
        types.append(NORMAL)
    return tokens, scores, types


def param_count(cfg: TinyConfig, n_vocab: int) -> int:
    """Number of weights written for ``cfg`` (embeddings, output, layers and norms)."""
    kv = cfg.n_head_kv * cfg.head_dim
    per_layer = (2 * cfg.n_embd * cfg.n_embd + 2 * kv * cfg.n_embd
                 + 3 * cfg.n_ff * cfg.n_embd + 2 * cfg.n_embd)
    return 2 * n_vocab * cfg.n_embd + cfg.n_embd + cfg.n_layer * per_layer


def tensors(cfg: TinyConfig, n_vocab: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded random weights with llama's tensor names; matrices F16, norms F32."""
    rng = np.random.default_rng(seed)
    e, kv = cfg.n_embd, cfg.n_head_kv * cfg.head_dim

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def norm() -> np.ndarray:
        return np.ones(e, dtype=np.float32)

    out: dict[str, np.ndarray] = {"token_embd.weight": mat(n_vocab, e)}
    for i in range(cfg.n_layer):
        b = f"blk.{i}."
        out[b + "attn_norm.weight"] = norm()
        out[b + "attn_q.weight"] = mat(e, e)
        out[b + "attn_k.weight"] = mat(kv, e)
        out[b + "attn_v.weight"] = mat(kv, e)
        out[b + "attn_output.weight"] = mat(e, e)
        out[b + "ffn_norm.weight"] = norm()
        out[b + "ffn_gate.weight"] = mat(cfg.n_ff, e)
        out[b + "ffn_up.weight"] = mat(cfg.n_ff, e)
        out[b + "ffn_down.weight"] = mat(e, cfg.n_ff)
    out["output_norm.weight"] = norm()
    out["output.weight"] = mat(n_vocab, e)
    return out


def write_tiny_gguf(path: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight llama GGUF of ``size`` ("tiny" or "small") to ``path``.

    The file is written to a temporary name beside ``path`` and renamed, so a reader never
    sees a half-written model (tests cache these files per machine).
    """
    import gguf  # optional dependency: only needed to write models

    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; expected one of {', '.join(SIZES)}")
    cfg = SIZES[size]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = build_vocab()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, "llama")
        w.add_name(f"llm-loadgen {cfg.name} random llama")
        w.add_context_length(cfg.n_ctx_train)
        w.add_embedding_length(cfg.n_embd)
        w.add_block_count(cfg.n_layer)
        w.add_feed_forward_length(cfg.n_ff)
        w.add_head_count(cfg.n_head)
        w.add_head_count_kv(cfg.n_head_kv)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_rope_freq_base(cfg.rope_base)
        w.add_layer_norm_rms_eps(cfg.rms_eps)
        w.add_vocab_size(len(tokens))
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        w.add_chat_template(CHAT_TEMPLATE)
        for name, arr in tensors(cfg, len(tokens), seed).items():
            w.add_tensor(name, arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def cache_dir() -> Path:
    """Per-machine cache of built tools and made models ($LOADGEN_CACHE_DIR overrides)."""
    root = os.environ.get("LOADGEN_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "llm-loadgen"


def cached_tiny_gguf(size: str = "tiny", seed: int = 0) -> Path:
    """The model of ``size`` in the per-machine cache, written on first use."""
    path = cache_dir() / "models" / f"tiny-llama-{size}-s{seed}-v{FORMAT_VERSION}.gguf"
    if not path.exists():
        write_tiny_gguf(path, size=size, seed=seed)
    return path
