"""A random-weight Llama in Hugging Face format, made locally (no hub access) for tests.

``make_tiny_hf(out_dir, size)`` writes a directory that ``AutoModelForCausalLM`` and
``AutoTokenizer`` load with ``local_files_only=True``:

- a byte-level BPE tokenizer trained with ``tokenizers`` on a seeded corpus of common English
  words (``arrivals.prompts.VOCABULARY``, the words synthetic workloads send, plus the sim's
  words), with ``<pad>``, ``<s>``, ``</s>`` and a chat template;
- a ``LlamaForCausalLM`` with weights drawn from ``torch.manual_seed(seed)`` (default 0):

      size    hidden  layers  heads  ffn    vocab  parameters
      tiny    64      2       2      128    1000   0.2 M    (fast: tests)
      small   512     7       8      1536   ~1400  ~25 M    (realistic per-token cost)

The output rows of the special tokens and of the 128 lone non-ASCII byte tokens are zeroed in
``lm_head``: their logit is always 0 while the best of the random logits is positive, so
greedy decoding never picks them and every generated token decodes to visible ASCII text (one
SSE chunk with text per token). The model therefore never stops on its own: every request runs
to ``max_tokens``, as with ``ignore_eos``. ``generation_config.json`` says ``top_k = 1``
(sampling from the top-1 token, i.e. greedy), so servers that sample by default (vLLM, which
takes its default sampling parameters from that file) decode greedily too.

The same directory serves on our PyTorch server and on vLLM (CPU build): heads are chosen so
that head_dim (hidden / heads) is one that vLLM's CPU attention supports (32 and 64 here).

Everything is deterministic (fixed corpus and seed); ``FORMAT`` is bumped whenever the recipe
changes, and it is part of the cache directory name.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

FORMAT = "v2"
"""Recipe version; part of the cached directory names (bump when the written files change)."""

MARKER = "llm_loadgen_tiny.json"
"""Written last into a finished model directory: {"format", "size", "seed"}."""

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{{ p['text'] }}{% endfor %}{% endif %}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""Zephyr-like chat format: ``<|role|>\\ncontent</s>\\n`` per message."""

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")


@dataclass(frozen=True)
class TinySize:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int = 2048


SIZES: dict[str, TinySize] = {
    # head_dim = hidden / heads must be one vLLM's CPU attention supports (32, 64, 80, ...;
    # not 16), so that the same model serves on vLLM too.
    "tiny": TinySize(hidden=64, layers=2, heads=2, ffn=128, vocab=1000),
    "small": TinySize(hidden=512, layers=7, heads=8, ffn=1536, vocab=4096),
}


def default_cache_dir() -> Path:
    """Where models made for tests live: ``$LOADGEN_CACHE_DIR/models`` or
    ~/.cache/llm-loadgen/models (the same cache as servers.models.gguf_tiny)."""
    root = os.environ.get("LOADGEN_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "llm-loadgen") / "models"


def cached_tiny_hf(size: str = "tiny", seed: int = 0, cache_dir: Path | None = None) -> Path:
    """``make_tiny_hf`` into the per-machine cache, reusing a complete earlier result."""
    name = f"hf-llama-{size}-s{seed}-{FORMAT}"
    return make_tiny_hf((cache_dir or default_cache_dir()) / name, size, seed=seed)


def make_tiny_hf(out_dir: Path | str, size: str = "tiny", *, seed: int = 0) -> Path:
    """Write the random-weight Llama of ``size`` ("tiny" or "small") to directory ``out_dir``.

    Returns ``out_dir``. The model is built in a temporary sibling directory and renamed into
    place, so no reader sees a half-written model. A directory already holding this same
    model (size, seed, FORMAT) is returned as is; any other existing non-empty directory
    raises FileExistsError (remove it first). Needs ``torch``, ``transformers`` and
    ``tokenizers`` (ImportError otherwise: pip install 'llm-loadgen[torch]').
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    out = Path(out_dir)
    want = {"format": FORMAT, "size": size, "seed": seed}
    if _marker(out) == want:
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not the {size} model (seed {seed}, "
                              f"format {FORMAT}); remove it or choose another directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        _write(tmp, SIZES[size], seed)
        (tmp / MARKER).write_text(json.dumps(want))
        if out.exists():
            out.rmdir()  # empty (checked above)
        try:
            tmp.rename(out)
        except OSError:  # another process finished the same model first
            if _marker(out) != want:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def param_count(model_dir: Path | str) -> int:
    """Number of parameters in ``model_dir/model.safetensors``, from its header alone.

    A safetensors file starts with an 8-byte little-endian header length and a JSON header
    that gives every tensor's shape; parameters = sum over tensors of prod(shape).
    """
    with open(Path(model_dir) / "model.safetensors", "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    total = 0
    for name, t in header.items():
        if name != "__metadata__":
            total += math.prod(t["shape"])
    return total


def _marker(out: Path) -> dict | None:
    try:
        return json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None


def corpus(n_lines: int = 4000, seed: int = 0) -> list[str]:
    """Seeded lines of common English words (and a few chat-format lines) to train BPE on."""
    import numpy as np

    from arrivals.prompts import VOCABULARY
    from servers.sim.tokens import VOCAB

    words = np.array(sorted(set(VOCABULARY) | set(VOCAB)), dtype=object)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n_lines):
        line = " ".join(rng.choice(words, size=int(rng.integers(4, 24))))
        if i % 10 == 0:
            line = f"<|user|>\n{line}</s>\n<|assistant|>\n"
        lines.append(line.capitalize() + ("." if i % 3 else ","))
    return lines


def _tokenizer(vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _write(path: Path, size: TinySize, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tokenizer(size.vocab)
    vocab = len(tok)  # the trainer may stop short of the requested size on a small corpus
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=size.hidden, intermediate_size=size.ffn,
        num_hidden_layers=size.layers, num_attention_heads=size.heads,
        num_key_value_heads=size.heads, max_position_embeddings=size.max_positions,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[_invisible_ids(tok)] = 0.0
    # Default decoding = greedy for servers that sample unless told otherwise (vLLM reads
    # top_k from generation_config.json): sampling from the top-1 token is argmax, so the
    # zeroed rows above are never chosen there either.
    model.generation_config.do_sample = True
    model.generation_config.top_k = 1
    model.save_pretrained(path)
    tok.save_pretrained(path)


def _invisible_ids(tok) -> list[int]:
    """Special tokens and tokens that decode to no complete visible ASCII text."""
    ids = []
    for i in range(len(tok)):
        text = tok.decode([i])
        if i in tok.all_special_ids or not text or not text.isascii():
            ids.append(i)
    return ids
