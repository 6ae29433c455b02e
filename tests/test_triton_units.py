"""Triton pieces without a server: model repository files, command lines, tensors, records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient")

from loadgen.clients.triton import finish_pieces  # noqa: E402
from loadgen.records import Record  # noqa: E402
from servers.launch import ServeSettings  # noqa: E402
from servers.triton.dist import TritonDist  # noqa: E402
from servers.triton.models.image import box_blur  # noqa: E402
from servers.triton.protocol import (  # noqa: E402
    Piece,
    decode_generate_event,
    decode_grpc_response,
    decode_tensor,
    grpc_request,
    kserve_dtype,
    llm_inputs,
    tensor_bytes,
)
from servers.triton.repository import (  # noqa: E402
    ImageModel,
    LlmModel,
    llm_config,
    model_shim,
    triton_model_name,
    write_repository,
)
from servers.triton.runtime import TritonRuntime  # noqa: E402
from servers.triton.server import TritonPorts, tritonserver_argv  # noqa: E402


def test_llm_config_maps_the_batch_size_axis_to_dynamic_batching_and_streams():
    text = llm_config(LlmModel("tiny", "/m", max_batch_size=6, instances=3,
                               batching="continuous", threads=2, max_queue_delay_us=250))
    assert "max_batch_size: 6\n" in text
    assert "model_transaction_policy { decoupled: true }" in text
    assert "dynamic_batching { max_queue_delay_microseconds: 250 }" in text
    assert "instance_group [ { count: 3 kind: KIND_CPU } ]" in text
    params = dict(re.findall(r'key: "(\w+)" value: \{ string_value: "([^"]*)" \}', text))
    assert params == {"hf_model": "/m", "batching": "continuous", "threads": "2"}
    assert re.search(r'name: "text_input" data_type: TYPE_STRING dims: \[ 1 \] }', text)
    assert re.search(r'name: "max_tokens" data_type: TYPE_INT32 dims: \[ 1 \] optional: true',
                     text)


@pytest.mark.parametrize("bad", [dict(max_batch_size=0), dict(instances=0),
                                 dict(batching="static"), dict(name="a/b")])
def test_llm_config_rejects_impossible_settings(bad):
    with pytest.raises(ValueError):
        llm_config(LlmModel(**{"name": "m", "hf_model": "/m", **bad}))


def test_triton_model_names_keep_only_directory_safe_characters():
    assert triton_model_name("meta-llama/Llama-3.1 8B") == "meta-llama_Llama-3.1_8B"
    assert triton_model_name("tiny") == "tiny"


def test_write_repository_lays_out_config_and_a_shim_naming_its_paths(tmp_path):
    repo = write_repository(tmp_path / "repo", [LlmModel("llm", "/m"), ImageModel()],
                            paths=["/code", "/site"])
    assert sorted(p.name for p in repo.iterdir()) == ["image_blur", "llm"]
    assert (repo / "llm" / "config.pbtxt").read_text().startswith('name: "llm"\n')
    shim = (repo / "llm" / "1" / "model.py").read_text()
    assert shim == model_shim("servers.triton.models.llm", ["/code", "/site"])
    assert "for _p in ['/code', '/site']:" in shim
    assert "from servers.triton.models.llm import TritonPythonModel" in shim
    compile(shim, "model.py", "exec")
    image = (repo / "image_blur" / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in image and "TYPE_UINT8 dims: [ -1, -1, 3 ]" in image
    with pytest.raises(ValueError, match="unique"):
        write_repository(tmp_path / "r2", [LlmModel("x", "/m"), LlmModel("x", "/n")])


def test_tritonserver_command_line_serves_the_repository_on_the_given_loopback_ports():
    dist = TritonDist(Path("/opt/t"))
    argv = tritonserver_argv(dist, Path("/repo"), "127.0.0.1", TritonPorts(1, 2, 3), ("--x",))
    assert argv[0] == "/opt/t/pytriton/tritonserver/bin/tritonserver"
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert pairs["--model-repository"] == "/repo"
    assert pairs["--backend-directory"] == "/opt/t/pytriton/tritonserver/backends"
    assert (pairs["--http-port"], pairs["--grpc-port"], pairs["--metrics-port"]) == \
        ("1", "2", "3")
    assert pairs["--http-address"] == pairs["--grpc-address"] == "127.0.0.1"
    assert argv[-1] == "--x"


def test_runtime_command_carries_batch_instances_and_the_ports_it_reports(tmp_path):
    rt = TritonRuntime(instances=3, batching="continuous", image_model=True,
                       dist=TritonDist(tmp_path))
    s = ServeSettings(model="/models/tiny", max_batch_size=8, served_model_name="tiny",
                      extra_args=("--triton-arg=--log-verbose=1",))
    argv = rt.command(s, 5000)
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert argv[1:3] == ["-m", "servers.triton"]
    assert flags["--max-batch-size"] == "8" and flags["--instances"] == "3"
    assert flags["--batching"] == "continuous" and flags["--port"] == "5000"
    assert "--image-model" in argv and argv[-1] == "--triton-arg=--log-verbose=1"
    info = rt.extra_info(s, 5000)["triton"]
    assert info["grpc"] == f"127.0.0.1:{flags['--triton-grpc-port']}"
    assert info["http"] == f"http://127.0.0.1:{flags['--triton-http-port']}"
    assert info["model"] == "tiny" and info["image_model"] == "image_blur"
    assert rt.command(s, 5000) == argv  # the ports are picked once per gateway port
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        rt.command(ServeSettings(model="/m", tensor_parallel_size=2), 5001)


def test_llm_inputs_have_a_batch_dimension_only_for_batched_models():
    t = llm_inputs("hi", 7, min_tokens=7, ignore_eos=True, extra={"temperature": 0.5})
    assert {k: (v.shape, kserve_dtype(v)) for k, v in t.items()} == {
        "text_input": ((1, 1), "BYTES"), "max_tokens": ((1, 1), "INT32"),
        "min_tokens": ((1, 1), "INT32"), "ignore_eos": ((1, 1), "BOOL"),
        "temperature": ((1, 1), "FP32")}
    assert set(llm_inputs("hi", 3, batched=False)) == {"text_input", "max_tokens"}
    assert llm_inputs("hi", 3, batched=False)["max_tokens"].shape == (1,)


@pytest.mark.parametrize("a", [np.array([[b"hello"], [b""]], dtype=np.object_),
                               np.arange(6, dtype=np.int32).reshape(2, 3),
                               np.array([True, False]), np.linspace(0, 1, 4, dtype=np.float32)])
def test_tensor_bytes_round_trip(a):
    back = decode_tensor(kserve_dtype(a), list(a.shape), tensor_bytes(a))
    assert back.shape == a.shape and (back == a).all()


def test_bytes_tensors_are_length_prefixed_little_endian():
    assert tensor_bytes(np.array([b"ab", b"c"], dtype=np.object_)) == \
        b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"


def test_grpc_request_carries_raw_tensors_and_asks_for_a_final_flag():
    req = grpc_request("llm", llm_inputs("hi", 3), request_id="9")
    assert req.model_name == "llm" and req.id == "9"
    assert [i.name for i in req.inputs] == ["text_input", "max_tokens"]
    assert list(req.inputs[0].shape) == [1, 1]
    assert req.raw_input_contents[0] == b"\x02\x00\x00\x00hi"
    assert req.parameters["triton_enable_empty_final_response"].bool_param is True


def _stream_response(text: str, out: int, finish: str, final: bool):
    from tritonclient.grpc import service_pb2

    r = service_pb2.ModelStreamInferResponse()
    ir = r.infer_response
    for name, a in (("text_output", np.array([[text.encode()]], dtype=np.object_)),
                    ("output_tokens", np.array([[out]], dtype=np.int32)),
                    ("finish_reason", np.array([[finish.encode()]], dtype=np.object_))):
        o = ir.outputs.add()
        o.name, o.datatype = name, kserve_dtype(a)
        o.shape.extend(a.shape)
        ir.raw_output_contents.append(tensor_bytes(a))
    ir.parameters["triton_final_response"].bool_param = final
    return r


def test_grpc_stream_responses_decode_to_pieces():
    assert decode_grpc_response(_stream_response(" a", 1, "", False)) == \
        Piece(text=" a", output_tokens=1, finish_reason="", final=False)
    last = decode_grpc_response(_stream_response("", 2, "length", True))
    assert last.final and last.finish_reason == "length" and last.output_tokens == 2
    from tritonclient.grpc import service_pb2

    err = decode_grpc_response(service_pb2.ModelStreamInferResponse(error_message="boom"))
    assert err.error == "boom" and err.final


def test_generate_events_decode_to_pieces():
    p = decode_generate_event({"text_output": "x", "output_tokens": 3, "input_tokens": 5,
                               "finish_reason": "stop"})
    assert (p.text, p.output_tokens, p.input_tokens, p.finish_reason, p.final) == \
        ("x", 3, 5, "stop", True)
    assert decode_generate_event({"error": "bad"}).error == "bad"


def test_finish_pieces_counts_tokens_from_the_models_cumulative_output():
    rec = Record(request_id=0, expected_input_tokens=9)
    pieces = [Piece("a", 1, 4), Piece("bc", 3, 4), Piece("", 3, 4, "length", True)]
    finish_pieces(rec, pieces, [0.1, 0.3, 0.35])
    assert rec.status == "ok"
    assert (rec.output_tokens, rec.output_tokens_source) == (3, "usage")
    assert (rec.input_tokens, rec.input_tokens_source) == (4, "usage")
    assert rec.chunk_times == [0.1, 0.3] and rec.chunk_tokens == [1, 2]
    assert rec.n_chunks == 2 and rec.t_first_token == 0.1
    assert rec.max_itl == pytest.approx(0.2)


def test_finish_pieces_without_counts_counts_chunks_and_uses_the_dataset_input():
    rec = Record(request_id=0, expected_input_tokens=9)
    finish_pieces(rec, [Piece("a"), Piece("b"), Piece("", final=True)], [0.1, 0.2, 0.3])
    assert (rec.output_tokens, rec.output_tokens_source) == (2, "chunks")
    assert (rec.input_tokens, rec.input_tokens_source) == (9, "dataset")


def test_finish_pieces_flags_errors_and_truncated_streams():
    rec = Record(request_id=0)
    finish_pieces(rec, [Piece("a", 1), Piece(error="model exploded", final=True)], [0.1, 0.2])
    assert rec.status == "http_error" and "model exploded" in rec.error
    rec = Record(request_id=1)
    finish_pieces(rec, [Piece("a", 1), Piece("b", 2)], [0.1, 0.2])
    assert rec.status == "invalid_response" and "final" in rec.error


def test_box_blur_averages_each_3x3_neighbourhood_with_edge_padding():
    flat = np.full((4, 5, 3), 77, dtype=np.uint8)
    assert (box_blur(flat) == 77).all()
    img = np.zeros((5, 5, 1), dtype=np.uint8)
    img[2, 2, 0] = 90
    out = box_blur(img)[:, :, 0]
    assert (out[1:4, 1:4] == 10).all() and out.sum() == 90
    with pytest.raises(ValueError):
        box_blur(np.zeros((4, 4), dtype=np.uint8))


def test_dist_info_reads_its_install_record(tmp_path):
    d = TritonDist(tmp_path)
    assert d.info() == {} and not d.complete()
    (tmp_path / "dist-info.json").write_text(json.dumps({"nvidia_pytriton": "0.7.0"}))
    assert d.info()["nvidia_pytriton"] == "0.7.0"
