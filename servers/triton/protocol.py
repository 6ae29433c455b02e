"""KServe v2 / Triton messages for a streaming text model, as data (no I/O).

Used by both sides of the network: the OpenAI gateway (servers/triton/gateway.py) and the
generator's native Triton clients (loadgen/clients/triton.py). The tensor names are the ones
Triton's LLM backends share (``text_input``, ``max_tokens``, ``text_output``; our model in
servers/triton/models/llm.py adds ``output_tokens``, ``input_tokens`` and ``finish_reason``):

- ``llm_inputs(prompt, max_tokens, ...)``: the input tensors of one request, as
  ``{name: numpy array}``, each of shape ``[1]`` (or ``[1, 1]`` for a model whose config has
  ``max_batch_size > 0``: the batch dimension is part of the shape);
- ``grpc_request(model, inputs)``: a ``ModelInferRequest`` protobuf with the tensors'
  bytes in ``raw_input_contents``, built before it is sent;
- ``decode_grpc_response(resp)`` / ``decode_generate_event(obj)``: one streamed response as a
  ``Piece`` (text, cumulative output tokens, input tokens, finish reason, final flag, error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.utils import (
    deserialize_bytes_tensor,
    np_to_triton_dtype,
    serialize_byte_tensor,
    triton_to_np_dtype,
)


def kserve_dtype(a: np.ndarray) -> str:
    """The KServe v2 datatype name of array ``a`` (object/str/bytes arrays are BYTES)."""
    if a.dtype == np.object_ or a.dtype.kind in ("S", "U"):
        return "BYTES"
    name = np_to_triton_dtype(a.dtype)
    if name is None:
        raise ValueError(f"numpy dtype {a.dtype} has no KServe v2 datatype; use bool, "
                         "(u)int8-64, float16-64 or strings")
    return name


def tensor_bytes(a: np.ndarray) -> bytes:
    """The raw bytes of a tensor as KServe v2 sends them (BYTES: a 4-byte little-endian
    length before each element; others: C-order little-endian values)."""
    if kserve_dtype(a) == "BYTES":
        return serialize_byte_tensor(a).item() if a.size else b""  # a 0-d array of bytes
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


def python_value_tensor(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor for a JSON value (``--extra-body`` entries): bool -> BOOL, int -> INT32,
    float -> FP32, str -> BYTES (a dict/list is sent as its JSON text)."""
    if isinstance(value, bool):
        return np.full(shape, value, dtype=np.bool_)
    if isinstance(value, int):
        return np.full(shape, value, dtype=np.int32)
    if isinstance(value, float):
        return np.full(shape, value, dtype=np.float32)
    if isinstance(value, dict | list):
        import orjson

        value = orjson.dumps(value).decode()
    return np.full(shape, str(value).encode(), dtype=np.object_)


def llm_inputs(prompt: str, max_tokens: int, *, min_tokens: int = 0, ignore_eos: bool = False,
               chat: bool = False, batched: bool = True,
               extra: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The input tensors of one text-generation request; optional ones only when set.
    (The native clients' ``--ignore-eos`` sends ``ignore_eos`` and ``min_tokens =
    max_tokens``, as the OpenAI client does.)"""
    shape = (1, 1) if batched else (1,)
    t: dict[str, np.ndarray] = {
        "text_input": np.full(shape, prompt.encode(), dtype=np.object_),
        "max_tokens": np.full(shape, int(max_tokens), dtype=np.int32),
    }
    if min_tokens:
        t["min_tokens"] = np.full(shape, int(min_tokens), dtype=np.int32)
    if ignore_eos:
        t["ignore_eos"] = np.full(shape, True, dtype=np.bool_)
    if chat:
        t["chat"] = np.full(shape, True, dtype=np.bool_)
    for k, v in (extra or {}).items():
        t[k] = python_value_tensor(v, shape)
    return t


def grpc_request(model: str, inputs: dict[str, np.ndarray], request_id: str = "",
                 outputs: list[str] | None = None, empty_final: bool = True,
                 model_version: str = "") -> Any:
    """A ``ModelInferRequest`` (tritonclient's generated protobuf) for ``inputs``.

    ``empty_final`` asks a decoupled model to flag its last response
    (``triton_enable_empty_final_response``), so the client knows the stream ended.
    """
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=model, id=request_id,
                                        model_version=model_version)
    for name, a in inputs.items():
        t = req.inputs.add()
        t.name, t.datatype = name, kserve_dtype(a)
        t.shape.extend(a.shape)
        req.raw_input_contents.append(tensor_bytes(a))
    for name in outputs or []:
        req.outputs.add().name = name
    if empty_final:
        req.parameters["triton_enable_empty_final_response"].bool_param = True
    return req


@dataclass(frozen=True, slots=True)
class Piece:
    """One streamed response of a text model."""

    text: str = ""
    output_tokens: int | None = None  # cumulative, when the model reports it
    input_tokens: int | None = None
    finish_reason: str = ""
    final: bool = False  # the model said this is the request's last response
    error: str | None = None


def _first(a: np.ndarray) -> Any:
    return a.reshape(-1)[0] if a.size else None


def _str(v: Any) -> str:
    if v is None:
        return ""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def decode_tensor(datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    """A numpy array from a tensor's raw bytes (the inverse of ``tensor_bytes``)."""
    if datatype == "BYTES":
        return deserialize_bytes_tensor(raw).reshape(shape)
    dtype = triton_to_np_dtype(datatype)
    if dtype is None:
        raise ValueError(f"unknown KServe v2 datatype {datatype!r}")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def decode_grpc_response(stream_resp: Any) -> Piece:
    """A ``ModelStreamInferResponse`` as a Piece."""
    if stream_resp.error_message:
        return Piece(error=stream_resp.error_message, final=True)
    r = stream_resp.infer_response
    final = False
    if "triton_final_response" in r.parameters:
        final = r.parameters["triton_final_response"].bool_param
    values: dict[str, Any] = {}
    for k, out in enumerate(r.outputs):
        if k < len(r.raw_output_contents):
            values[out.name] = _first(decode_tensor(out.datatype, list(out.shape),
                                                    r.raw_output_contents[k]))
    return _piece(values, final)


def decode_generate_event(obj: dict[str, Any]) -> Piece:
    """One ``data:`` object of Triton's HTTP ``generate_stream`` as a Piece."""
    if "error" in obj:
        return Piece(error=str(obj["error"]), final=True)
    return _piece(obj, False)


def _piece(v: dict[str, Any], final: bool) -> Piece:
    def num(name: str) -> int | None:
        x = v.get(name)
        if isinstance(x, list):
            x = x[0] if x else None
        return None if x is None else int(x)

    text = v.get("text_output")
    if isinstance(text, list):
        text = text[0] if text else ""
    finish = v.get("finish_reason")
    if isinstance(finish, list):
        finish = finish[0] if finish else ""
    finish = _str(finish)
    return Piece(text=_str(text), output_tokens=num("output_tokens"),
                 input_tokens=num("input_tokens"), finish_reason=finish,
                 final=final or bool(finish))
