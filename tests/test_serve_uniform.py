"""`loadgen serve RUNTIME --model M [--max-batch-size B] [--tensor-parallel-size N] [--port P]
[-- extra runtime flags]` means the same for every runtime (issue 3): parsed, not run."""

from __future__ import annotations

import pytest

from loadgen.cli import parse_args

RUNTIMES = ("sim", "llamacpp", "llamacpp-python", "pytorch", "vllm", "triton")
NO_TP = ("sim", "llamacpp", "llamacpp-python", "pytorch", "triton")


def _batch(runtime: str, ns) -> int | None:
    return ns.slots if runtime == "llamacpp" else ns.max_batch_size


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_takes_model_batch_size_and_port_flags(runtime):
    b = 1 if runtime == "llamacpp-python" else 4
    _, ns, _ = parse_args(["serve", runtime, "--model", "m1", "--max-batch-size", str(b),
                           "--port", "8123"])
    assert (ns.model, _batch(runtime, ns), ns.port) == ("m1", b, 8123)


@pytest.mark.parametrize("runtime", ["llamacpp", "llamacpp-python", "vllm", "triton"])
def test_the_positional_model_and_model_flag_are_the_same(runtime):
    assert parse_args(["serve", runtime, "m.gguf"])[1].model == "m.gguf"
    assert parse_args(["serve", runtime, "--model", "m.gguf"])[1].model == "m.gguf"
    assert parse_args(["serve", runtime, "m.gguf", "--model", "m.gguf"])[1].model == "m.gguf"


def test_two_different_models_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["serve", "vllm", "a", "--model", "b"])
    assert e.value.code == 2 and "two models given: 'a' and --model 'b'" in capsys.readouterr().err


@pytest.mark.parametrize("runtime", NO_TP)
def test_tensor_parallel_above_one_is_refused_where_the_runtime_has_none(runtime, capsys):
    assert parse_args(["serve", runtime, "--model", "m", "-tp", "1"])[1].tensor_parallel_size == 1
    with pytest.raises(SystemExit) as e:
        parse_args(["serve", runtime, "--model", "m", "--tensor-parallel-size", "2"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert f"--tensor-parallel-size 2: runtime {runtime!r} has no tensor parallelism" in err


def test_vllm_takes_tensor_parallel_size():
    assert parse_args(["serve", "vllm", "--model", "m", "-tp", "4"])[1].tensor_parallel_size == 4


def test_the_one_request_server_refuses_a_batch(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["serve", "llamacpp-python", "m.gguf", "--max-batch-size", "2"])
    assert e.value.code == 2 and "loadgen serve llamacpp -np N" in capsys.readouterr().err


@pytest.mark.parametrize("runtime", ["llamacpp", "llamacpp-python", "triton"])
def test_arguments_after_the_separator_reach_the_server_verbatim(runtime):
    _, ns, _ = parse_args(["serve", runtime, "m", "--server-arg=--a", "--", "--flash-attn", "on"])
    assert ns.server_arg == ["--a", "--flash-attn", "on"]


def test_vllm_keeps_arguments_after_the_separator():
    assert parse_args(["serve", "vllm", "m", "--", "--max-model-len", "256"])[1].passthrough \
        == ["--max-model-len", "256"]


@pytest.mark.parametrize(("runtime", "flags", "attr", "value"), [
    ("sim", ["--step-base-ms", "3"], "step_base_ms", 3.0),
    ("pytorch", ["--dtype", "bfloat16"], "dtype", "bfloat16"),
])
def test_our_own_servers_parse_arguments_after_the_separator_as_their_flags(runtime, flags,
                                                                           attr, value):
    _, ns, _ = parse_args(["serve", runtime, "--model", "m", "--", *flags])
    assert getattr(ns, attr) == value
