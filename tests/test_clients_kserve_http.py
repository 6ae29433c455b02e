"""The KServe v2 and generic HTTP clients: payload building (unit) and the generic client
end to end against the reference server on 127.0.0.1."""

from __future__ import annotations

import argparse

import numpy as np
import orjson
import pytest

pytest.importorskip("tritonclient")

from arrivals.workload import synthetic_workload  # noqa: E402
from loadgen.cli import build_parser, client_config  # noqa: E402
from loadgen.clients.http import HttpClient, HttpConfig, check_template, render  # noqa: E402
from loadgen.clients.kserve import (  # noqa: E402
    HEADER_LENGTH,
    KServeClient,
    KServeConfig,
    check_response,
    choose_variants,
    encode_request,
    parse_tensor_spec,
    variants_from_files,
    variants_from_specs,
)
from loadgen.clients.select import make_client  # noqa: E402
from loadgen.flags import UsageError  # noqa: E402
from servers.sim.config import SimConfig  # noqa: E402

SIM_MODEL = SimConfig().model


def test_tensor_specs_parse_names_types_and_alternative_shapes():
    s = parse_tensor_spec("image:uint8:32x32x3|256x256x3")
    assert (s.name, s.datatype, s.shapes) == ("image", "UINT8", ((32, 32, 3), (256, 256, 3)))
    for bad in ("image:UINT8", "image:UINT3:4", "image:FP32:4xa", "image:FP32:0x2"):
        with pytest.raises(ValueError, match="tensor spec"):
            parse_tensor_spec(bad)


def test_variants_zip_alternatives_with_seeded_data():
    specs = [parse_tensor_spec("image:UINT8:2x2x3|8x8x3"), parse_tensor_spec("k:INT32:1")]
    a, b = variants_from_specs(specs, seed=3), variants_from_specs(specs, seed=3)
    assert [v.label for v in a] == ["image=2x2x3,k=1", "image=8x8x3,k=1"]
    assert a[1].tensors["image"].shape == (8, 8, 3) and a[1].tensors["image"].dtype == np.uint8
    assert all((x.tensors["image"] == y.tensors["image"]).all() for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="number of shapes"):
        variants_from_specs([parse_tensor_spec("a:FP32:1|2"), parse_tensor_spec("b:FP32:1|2|3")])


def test_each_request_draws_a_variant_uniformly_and_reproducibly():
    pick = choose_variants(3000, 3, seed=5)
    assert (pick == choose_variants(3000, 3, seed=5)).all()
    assert set(np.bincount(pick)) <= set(range(900, 1101))  # ~1000 each


def test_binary_infer_body_is_a_json_header_then_raw_tensor_bytes():
    spec = parse_tensor_spec("image:UINT8:4x4x3")
    v = variants_from_specs([spec])[0]
    p = encode_request(v, KServeConfig("http://x", "m", inputs=(spec,)))
    n = int(p.headers[HEADER_LENGTH])
    head = orjson.loads(p.body[:n])
    assert head["inputs"][0]["name"] == "image" and head["inputs"][0]["shape"] == [4, 4, 3]
    assert head["inputs"][0]["parameters"]["binary_data_size"] == 48
    assert p.body[n:] == v.tensors["image"].tobytes()
    j = encode_request(v, KServeConfig("http://x", "m", inputs=(spec,), binary=False))
    assert HEADER_LENGTH not in j.headers
    assert orjson.loads(j.body)["inputs"][0]["data"] == v.tensors["image"].reshape(-1).tolist()


def test_npz_payload_files_are_variants_named_by_their_keys(tmp_path):
    np.savez(tmp_path / "a.npz", image=np.zeros((2, 2, 3), np.uint8))
    (v,) = variants_from_files([tmp_path / "a.npz"])
    assert v.label == "a.npz" and list(v.tensors) == ["image"]
    with pytest.raises(ValueError, match=".npz"):
        variants_from_files([tmp_path / "a.bin"])


def test_infer_responses_are_checked_for_outputs():
    ok = orjson.dumps({"model_name": "m", "outputs": [{"name": "o"}]})
    assert check_response(ok + b"\x00\x01", str(len(ok))) is None
    assert "no outputs" in check_response(b'{"model_name": "m"}', None)
    assert "server error" in check_response(b'{"error": "bad input"}', None)
    assert "not KServe" in check_response(b"<html>", None)


def test_kserve_client_prepares_one_body_per_request_from_its_variants():
    wl = synthetic_workload(num_requests=40, request_rate=10, seed=2)
    c = KServeClient(KServeConfig("http://x", "m",
                                  inputs=(parse_tensor_spec("image:UINT8:2x2x3|16x16x3"),)))
    bodies = c.prepare(wl)
    assert len(bodies) == 40 and {p.label for p in bodies} == {"image=2x2x3", "image=16x16x3"}
    assert len({id(p) for p in bodies}) == 2  # shared, not copied per request


def test_body_templates_fill_request_fields_as_json():
    t = '{"model": "$model", "prompt": $prompt_json, "n": $output_tokens, "id": $request_id}'
    check_template(t)
    body = render(t, prompt='say "hi"', input_tokens=3, output_tokens=5, request_id=7,
                  model="m")
    assert orjson.loads(body) == {"model": "m", "prompt": 'say "hi"', "n": 5, "id": 7}
    with pytest.raises(ValueError, match="unknown"):
        check_template('{"x": $nope}')


def _ns(*args: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", "--model", "m", *args])


def test_run_flags_build_each_client_and_openai_stays_the_default():
    assert type(make_client(_ns(), client_config)).__name__ == "ClientConfig"
    k = make_client(_ns("--client", "kserve", "--base-url", "http://h:1",
                        "--kserve-input", "x:FP32:2"), client_config)
    assert k.kind == "kserve" and k.cfg.url == "http://h:1/v2/models/m/infer"
    g = make_client(_ns("--client", "triton-grpc", "--port", "8001"), client_config)
    assert g.kind == "triton-grpc" and g.cfg.grpc_target == "127.0.0.1:8001"
    h = make_client(_ns("--client", "http", "--base-url", "http://h:1", "--http-path",
                        "predict", "--expect-status", "200,202"), client_config)
    assert h.cfg.url == "http://h:1/predict" and h.cfg.expect_status == (200, 202)
    with pytest.raises(UsageError, match="--kserve-input"):
        make_client(_ns("--client", "kserve"), client_config)


@pytest.mark.e2e
def test_generic_http_client_records_status_and_request_bytes_against_a_real_server(
        start_sim, tmp_path):
    """Non-streamed OpenAI completions as an opaque request/reply service: every request
    is ok, request_bytes is the rendered body, and a wrong expected status is an error."""
    from analysis.load import load_run
    from loadgen.run import RunSpec, execute

    srv = start_sim()
    wl = synthetic_workload(num_requests=12, request_rate=30, input_len=8, output_len=4,
                            range_ratio=0.5, seed=4)
    template = '{"model": "$model", "prompt": $prompt_json, "max_tokens": $output_tokens}'
    for name, expect, status in (("ok", (200,), "ok"), ("bad", (201,), "http_error")):
        cfg = HttpConfig(base_url=srv.base_url, model=SIM_MODEL, path="/v1/completions",
                         body_template=template, expect_status=expect, timeout_s=30)
        res = execute(RunSpec(client=HttpClient(cfg), workload=wl, result_dir=tmp_path,
                              run_name=name, progress=False, quiet=True,
                              max_send_lag_ms=200.0))
        r = load_run(res.run_dir).requests
        assert r.column("status").to_pylist() == [status] * 12
        ids = r.column("request_id").to_pylist()
        want = [len(render(template, prompt=wl.prompts[i], input_tokens=0,
                           output_tokens=int(wl.output_tokens[i]), request_id=i,
                           model=SIM_MODEL)) for i in ids]
        assert r.column("request_bytes").to_pylist() == want
        assert all(b > 0 for b in r.column("response_bytes").to_pylist())
    assert r.column("http_status").to_pylist() == [200] * 12
