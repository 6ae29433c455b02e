"""The KServe v2 ``infer`` client: arbitrary tensors to any model of a KServe v2 server
(Triton, KServe, Seldon MLServer, TorchServe's v2 API), request/reply, for non-LLM models.

Payloads are *variants*, each a set of named input tensors, built before t0:

- from ``--kserve-input NAME:DTYPE:SHAPE[|SHAPE...]`` specs, e.g.
  ``image:UINT8:32x32x3|256x256x3|1024x1024x3`` gives three variants of seeded random data
  (every spec has 1 shape or the same number of alternatives: they are zipped);
- or from ``.npz`` files (``--payload-file``; one variant per file, its arrays named by their
  keys: ``np.savez(f, image=a)``).

Request i sends variant ``v[i]``, drawn uniformly with a seeded generator (the workload's
seed), so payload size is independent of arrival time. The body uses Triton's binary tensor
extension (``Inference-Header-Content-Length``: a JSON header, then the raw tensor bytes, and
binary outputs back) unless ``--kserve-json`` asks for plain JSON tensors. Each record carries
``request_bytes`` (the body size) and ``item_id`` = the variant's label (e.g.
``image=1024x1024x3``), so latency can be conditioned on payload size; ``response_bytes`` is
the size of the answer. A 2xx answer whose body is not a KServe v2 response with outputs is
``invalid_response``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
import orjson

from loadgen.clients.failures import FAILURES, record_cancelled, record_failure
from loadgen.clients.pool import make_session
from loadgen.records import Record

if TYPE_CHECKING:
    from arrivals.workload import Workload
    from loadgen.clients.base import Sender
    from loadgen.engine import EngineOptions

DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
          "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
          "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
          "BYTES": np.object_}
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class TensorSpec:
    """One input: its name, KServe v2 datatype and one or more alternative shapes."""

    name: str
    datatype: str
    shapes: tuple[tuple[int, ...], ...]


def parse_tensor_spec(text: str) -> TensorSpec:
    """``NAME:DTYPE:SHAPE[|SHAPE...]``, a SHAPE being dims joined by ``x`` (``32x32x3``)."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"tensor spec {text!r}: expected NAME:DTYPE:SHAPE[|SHAPE...], e.g. "
                         "image:UINT8:32x32x3|256x256x3")
    name, dtype, shapes = parts[0], parts[1].upper(), parts[2]
    if dtype not in DTYPES:
        raise ValueError(f"tensor spec {text!r}: datatype {dtype!r} is not one of "
                         f"{', '.join(DTYPES)}")
    out = []
    for s in shapes.split("|"):
        try:
            dims = tuple(int(d) for d in s.lower().split("x"))
        except ValueError:
            raise ValueError(f"tensor spec {text!r}: shape {s!r} must be positive integers "
                             "joined by x, e.g. 32x32x3") from None
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"tensor spec {text!r}: shape {s!r} must have dims >= 1")
        out.append(dims)
    return TensorSpec(name, dtype, tuple(out))


def random_tensor(spec: TensorSpec, shape: tuple[int, ...],
                  rng: np.random.Generator) -> np.ndarray:
    """Seeded random data of ``shape``: uniform bytes for UINT8/INT8, small integers for
    other integer types, standard normal floats, random booleans, short ASCII strings."""
    dtype = DTYPES[spec.datatype]
    if spec.datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if spec.datatype in ("UINT8", "INT8"):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 100, size=shape).astype(dtype)
    if spec.datatype == "BYTES":
        words = np.array([b"alpha", b"beta", b"gamma", b"delta"], dtype=np.object_)
        return words[rng.integers(0, len(words), size=shape)]
    return rng.standard_normal(size=shape).astype(dtype)


@dataclass(frozen=True)
class Variant:
    label: str
    tensors: dict[str, np.ndarray]


def variants_from_specs(specs: Sequence[TensorSpec], seed: int = 0) -> list[Variant]:
    """Zip the specs' shape alternatives into variants of seeded random tensors."""
    if not specs:
        return []
    n = max(len(s.shapes) for s in specs)
    bad = [s.name for s in specs if len(s.shapes) not in (1, n)]
    if bad:
        raise ValueError(f"inputs {bad} have a number of shapes other than 1 or {n}: every "
                         "--kserve-input lists one shape or the same number of alternatives")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6B73]))
    out = []
    for v in range(n):
        tensors = {s.name: random_tensor(s, s.shapes[v if len(s.shapes) > 1 else 0], rng)
                   for s in specs}
        label = ",".join(f"{k}={'x'.join(map(str, a.shape))}" for k, a in tensors.items())
        out.append(Variant(label, tensors))
    return out


def variants_from_files(paths: Sequence[str | Path]) -> list[Variant]:
    """One variant per ``.npz`` file (arrays named by their keys)."""
    out = []
    for p in map(Path, paths):
        if p.suffix != ".npz":
            raise ValueError(f"payload file {str(p)!r}: the kserve client reads .npz files "
                             "(np.savez(FILE, INPUT_NAME=array)); raw bodies are for --client http")
        with np.load(p, allow_pickle=False) as z:
            tensors = {k: z[k] for k in z.files}
        if not tensors:
            raise ValueError(f"payload file {str(p)!r} holds no arrays")
        out.append(Variant(p.name, tensors))
    return out


def choose_variants(n_requests: int, n_variants: int, seed: int) -> np.ndarray:
    """Which variant each request sends: uniform, seeded, independent of the schedule."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7661]))
    return rng.integers(0, n_variants, size=n_requests)


@dataclass(frozen=True)
class KServeConfig:
    base_url: str  # http://host:port
    model: str
    inputs: tuple[TensorSpec, ...] = ()
    payload_files: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()  # requested outputs (default: all the model has)
    binary: bool = True  # Triton's binary tensor extension (else JSON tensors)
    model_version: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 600.0
    seed: int | None = None  # None: the workload's seed

    @property
    def url(self) -> str:
        v = f"/versions/{self.model_version}" if self.model_version else ""
        return f"{self.base_url.rstrip('/')}/v2/models/{self.model}{v}/infer"


@dataclass(frozen=True)
class Payload:
    body: bytes
    headers: dict[str, str]
    label: str


def encode_request(v: Variant, cfg: KServeConfig) -> Payload:
    """The HTTP body and headers of one infer request for variant ``v``."""
    from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

    from servers.triton.protocol import kserve_dtype

    inputs = []
    for name, a in v.tensors.items():
        i = InferInput(name, list(a.shape), kserve_dtype(a))
        i.set_data_from_numpy(a, binary_data=cfg.binary)
        inputs.append(i)
    outs = [InferRequestedOutput(o, binary_data=cfg.binary) for o in cfg.outputs] or None
    body, json_size = InferenceServerClient.generate_request_body(inputs, outputs=outs)
    headers = {"Content-Type": "application/octet-stream" if json_size else
               "application/json", **cfg.headers}
    if json_size is not None:
        headers[HEADER_LENGTH] = str(json_size)
    return Payload(body if isinstance(body, bytes) else body.encode(), headers, v.label)


def check_response(data: bytes, header_length: str | None) -> str | None:
    """None if ``data`` is a KServe v2 infer response with outputs, else what is wrong."""
    n = int(header_length) if header_length else len(data)
    try:
        head = orjson.loads(data[:n])
    except orjson.JSONDecodeError:
        return f"response is not KServe v2 JSON: {data[:200]!r}"
    if not isinstance(head, dict) or "error" in head:
        return f"server error: {str(head.get('error') if isinstance(head, dict) else head)[:300]}"
    if not head.get("outputs"):
        return "response has no outputs"
    return None


class KServeClient:
    """The ``Client`` (loadgen/clients/base.py) for KServe v2 ``infer``."""

    kind = "kserve"

    def __init__(self, cfg: KServeConfig) -> None:
        if bool(cfg.inputs) == bool(cfg.payload_files):
            raise ValueError("the kserve client needs either --kserve-input specs or "
                             "--payload-file .npz files (not both)")
        self.cfg = cfg
        self._variants: list[Variant] | None = None

    @property
    def label(self) -> str:
        return self.cfg.model

    @property
    def base_url(self) -> str:
        return self.cfg.base_url

    def variants(self, seed: int = 0) -> list[Variant]:
        if self._variants is None:
            s = self.cfg.seed if self.cfg.seed is not None else seed
            self._variants = variants_from_specs(self.cfg.inputs, s) if self.cfg.inputs \
                else variants_from_files(self.cfg.payload_files)
        return self._variants

    def prepare(self, workload: Workload) -> Sequence[Payload]:
        """One encoded body per variant; request i refers to the body of its variant."""
        seed = int(self.cfg.seed if self.cfg.seed is not None
                   else workload.description.get("seed") or 0)
        encoded = [encode_request(v, self.cfg) for v in self.variants(seed)]
        pick = choose_variants(len(workload), len(encoded), seed).tolist()
        return [encoded[k] for k in pick]

    @contextlib.asynccontextmanager
    async def connect(self, opts: EngineOptions) -> AsyncIterator[Sender]:
        url = self.cfg.url
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        clock = time.perf_counter
        async with make_session(opts, self.cfg.timeout_s) as session:

            async def sender(p: Payload, rec: Record, t0: float) -> None:
                rec.request_bytes = len(p.body)
                if rec.item_id is None:
                    rec.item_id = p.label
                rec.t_sent = clock() - t0
                try:
                    async with session.post(url, data=p.body, headers=p.headers,
                                            timeout=timeout) as resp:
                        rec.t_first_byte = clock() - t0
                        rec.http_status = resp.status
                        data = await resp.read()
                        rec.t_done = clock() - t0
                        hlen = resp.headers.get(HEADER_LENGTH)
                except asyncio.CancelledError:
                    record_cancelled(rec, t0)
                    raise
                except FAILURES as e:
                    record_failure(rec, e, t0, self.cfg.timeout_s)
                    return
                rec.response_bytes = len(data)
                rec.t_first_token = rec.t_done  # request/reply: the answer arrives whole
                if rec.http_status >= 300:
                    rec.status = "http_error"
                    rec.error = f"HTTP {rec.http_status}: " + data[:300].decode("utf-8",
                                                                              "replace")
                    return
                problem = check_response(data, hlen)
                if problem:
                    rec.status, rec.error = "invalid_response", problem
                else:
                    rec.status = "ok"

            yield sender

    def describe(self) -> dict[str, Any]:
        from loadgen.manifest import redact_headers

        c = self.cfg
        vs = self._variants or []
        return {"base_url": c.base_url, "model": c.model, "url": c.url,
                "inputs": [f"{s.name}:{s.datatype}:" + "|".join("x".join(map(str, sh))
                                                                for sh in s.shapes)
                           for s in c.inputs],
                "payload_files": list(c.payload_files), "outputs": list(c.outputs),
                "binary": c.binary, "headers": redact_headers(c.headers),
                "timeout_s": c.timeout_s, "seed": c.seed,
                "variants": [v.label for v in vs] or "random data per --kserve-input (labels "
                                                    "in each record's item_id)"}

    async def preflight(self) -> dict[str, Any]:
        """The model is ready, has the inputs we send, and answers one request (the
        smallest variant)."""
        from loadgen.preflight import PreflightError

        base = self.cfg.base_url.rstrip("/")
        v = f"/versions/{self.cfg.model_version}" if self.cfg.model_version else ""
        to = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=to, trust_env=False) as s:
            try:
                async with s.get(f"{base}/v2/models/{self.cfg.model}{v}",
                                 headers=self.cfg.headers) as r:
                    meta_body = await r.read()
                    status = r.status
            except aiohttp.ClientError as e:
                raise PreflightError(f"cannot reach {base} ({e}); is the server running and "
                                     "--base-url right?") from e
            if status != 200:
                raise PreflightError(f"GET {base}/v2/models/{self.cfg.model}{v} answered HTTP "
                                     f"{status}: {meta_body[:200]!r}; is --model the KServe "
                                     "model name?")
            meta = orjson.loads(meta_body)
        names = {i.get("name"): i.get("datatype") for i in meta.get("inputs", [])}
        variants = self.variants()
        for var in variants:
            unknown = [k for k in var.tensors if k not in names]
            if unknown:
                raise PreflightError(f"model {self.cfg.model!r} has no inputs {unknown}; its "
                                     f"inputs are {names}")
        smallest = min(variants, key=lambda x: sum(a.nbytes for a in x.tensors.values()))
        rec = Record(request_id=-1)
        from loadgen.engine import EngineOptions

        async with self.connect(EngineOptions()) as send:
            await send(encode_request(smallest, self.cfg), rec, time.perf_counter())
        if rec.status != "ok":
            raise PreflightError(f"test request ({smallest.label}) to {self.cfg.url} failed "
                                 f"({rec.status}): {rec.error} (skip with --skip-preflight)")
        return {"base_url": base, "model_metadata": meta,
                "probe": {"status": rec.status, "variant": smallest.label,
                          "request_bytes": rec.request_bytes}}
