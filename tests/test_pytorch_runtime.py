"""The pytorch runtime's command line, environment and version (no torch needed), the
``loadgen serve pytorch`` registration, and the tiny HF model maker's directory rules."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from loadgen.cli import build_parser
from servers.launch import ServeSettings
from servers.models.hf_tiny import make_tiny_hf
from servers.pytorch.runtime import PytorchRuntime


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_command_names_batching_threads_and_the_batch_size_axis():
    s = ServeSettings(model="/models/x", max_batch_size=16, served_model_name="x",
                      extra_args=("--dtype", "bfloat16"))
    argv = PytorchRuntime(batching="static", threads=3).command(s, 9123)
    assert argv[1:3] == ["-m", "servers.pytorch"]
    assert (_flag(argv, "--port"), _flag(argv, "--model")) == ("9123", "/models/x")
    assert (_flag(argv, "--batching"), _flag(argv, "--threads")) == ("static", "3")
    assert _flag(argv, "--max-batch-size") == "16"
    assert argv[-2:] == ["--dtype", "bfloat16"]
    assert PytorchRuntime().model_name(s) == "x"
    assert PytorchRuntime().model_name(ServeSettings(model="/models/x")) == "/models/x"


def test_tensor_parallelism_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="one device"):
        PytorchRuntime().command(ServeSettings(model="m", tensor_parallel_size=2), 1)


def test_the_server_never_reaches_the_hub():
    env = PytorchRuntime().env(ServeSettings(model="m"))
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"


def test_version_is_torch_and_transformers_or_says_why_not():
    v = PytorchRuntime().version()
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        assert "unavailable" in v
        return
    assert v["torch"] == torch_version
    assert v["transformers"] == metadata.version("transformers")


def test_loadgen_serve_pytorch_parses_its_flags():
    ns = build_parser().parse_args(["serve", "pytorch", "--model", "m", "--batching", "static",
                                    "--max-batch-size", "4", "--threads", "2"])
    assert (ns.model, ns.batching, ns.max_batch_size, ns.threads) == ("m", "static", 4, 2)
    assert callable(ns.handler)


def test_make_tiny_hf_refuses_to_overwrite_another_directory(tmp_path: Path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="remove it"):
        make_tiny_hf(tmp_path, "tiny")
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_make_tiny_hf_writes_a_loadable_model_and_reuses_it(tmp_path: Path):
    pytest.importorskip("torch")
    from transformers import AutoConfig, AutoTokenizer

    out = make_tiny_hf(tmp_path / "m", "tiny", seed=1)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert make_tiny_hf(out, "tiny", seed=1) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    config = AutoConfig.from_pretrained(out, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (64, 2, len(tok))
    assert tok.chat_template and tok.eos_token == "</s>"
    with pytest.raises(FileExistsError):
        make_tiny_hf(out, "small", seed=1)
