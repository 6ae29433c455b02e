"""The random-weight Hugging Face Llama (servers/models/hf_tiny.py) as vLLM needs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.cli import main
from servers.models.hf_tiny import SIZES, param_count

# vLLM 0.32's CPU attention (vllm/v1/attention/backends/cpu_attn.py, get_supported_head_sizes);
# head_dim 16 fails at the first request with "Unsupported CPU attention configuration".
VLLM_CPU_HEAD_SIZES = {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_head_dim_is_one_vllms_cpu_attention_supports(size):
    s = SIZES[size]
    assert s.hidden % s.heads == 0 and s.hidden // s.heads in VLLM_CPU_HEAD_SIZES


def test_make_tiny_hf_command_writes_a_greedy_llama_directory(tmp_path: Path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "tiny-hf"
    assert main(["models", "make-tiny", "--format", "hf", "--size", "tiny", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == 32
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["do_sample"], gen["top_k"], gen["eos_token_id"]) == (True, 1, 2)
    assert (out / "tokenizer.json").is_file() and (out / "chat_template.jinja").is_file()
    n = param_count(out)
    assert 150_000 < n < 300_000  # ~0.2 M: 2 x 1000 x 64 embeddings + 2 layers
    assert f"{n / 1e6:.2f} M parameters" in capsys.readouterr().out
