"""``loadgen run --client KIND``: the flags of the non-OpenAI clients and building a client.

    openai       (default) OpenAI completions/chat over SSE: loadgen/clients/openai.py
    triton-grpc  Triton gRPC ModelStreamInfer for streaming text models: clients/triton.py
    triton-http  Triton HTTP generate_stream (SSE) for streaming text models: clients/triton.py
    kserve       KServe v2 infer with arbitrary tensors (binary extension): clients/kserve.py
    http         generic request/reply (method, path, body template or files): clients/http.py

The common flags keep their meaning where it applies: ``--model`` is the model name (Triton's
or KServe's model, a label for http), ``--base-url`` the server (``host:port`` or
``grpc://host:port`` for triton-grpc), ``--ignore-eos``, ``--extra-body`` (extra input
tensors / JSON fields for the Triton clients), ``--header`` (kserve, http), ``--timeout``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadgen.flags import UsageError

CLIENT_KINDS = ("openai", "triton-grpc", "triton-http", "kserve", "http")


def _status_list(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--expect-status {text!r}: give HTTP status codes "
                                         "separated by commas, e.g. 200,201") from None
    if not out or any(not 100 <= s <= 599 for s in out):
        raise argparse.ArgumentTypeError(f"--expect-status {text!r}: codes must be 100-599")
    return out


def add_client_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--client", choices=CLIENT_KINDS, default="openai",
                   help="protocol (default openai): triton-grpc / triton-http stream from a "
                   "Triton text model natively, kserve sends KServe v2 infer tensors, http any "
                   "request/reply (docs/clients.md)")
    g.add_argument("--kserve-input", action="append", default=[], metavar="NAME:DTYPE:SHAPE",
                   help="kserve: an input of seeded random data, repeatable; SHAPE is dims "
                   "joined by x, alternatives by | (image:UINT8:32x32x3|512x512x3): each "
                   "request draws one alternative")
    g.add_argument("--kserve-output", action="append", default=[], metavar="NAME",
                   help="kserve: request only these outputs (default: all)")
    g.add_argument("--kserve-json", action="store_true",
                   help="kserve: JSON tensors instead of the binary tensor extension")
    g.add_argument("--payload-file", action="append", default=[], metavar="FILE",
                   help="kserve: an .npz of input arrays; http: a raw request body; "
                   "repeatable, each request draws one file")
    g.add_argument("--http-method", default="POST", help="http: method (default POST)")
    g.add_argument("--http-path", default="/", help="http: path on --base-url (default /)")
    g.add_argument("--body-template", default=None, metavar="TEXT|@FILE",
                   help="http: body with $prompt, $prompt_json, $input_tokens, "
                   "$output_tokens, $request_id, $model")
    g.add_argument("--content-type", default=None,
                   help="http: Content-Type (default: JSON for templates, octet-stream for "
                   "files)")
    g.add_argument("--expect-status", type=_status_list, default=(200,), metavar="CODES",
                   help="http: statuses counted as ok, comma-separated (default 200)")


def _base(ns: argparse.Namespace) -> str:
    return (ns.base_url or f"http://{ns.host}:{ns.port}").rstrip("/")


def make_client(ns: argparse.Namespace, openai_config: Callable[[argparse.Namespace], Any]):
    """The client for ``ns.client``; ``openai_config`` builds the OpenAI ClientConfig (the
    default path, unchanged)."""
    kind = getattr(ns, "client", "openai")
    if kind == "openai":
        return openai_config(ns)
    base = _base(ns)
    headers = dict(ns.header)
    try:
        if kind in ("triton-grpc", "triton-http"):
            from loadgen.clients.triton import TritonConfig, TritonGrpcClient, TritonHttpClient

            if kind == "triton-grpc":
                url = base if ns.base_url else f"{ns.host}:{ns.port}"
                cfg = TritonConfig(url=url, model=ns.model, protocol="grpc",
                                   ignore_eos=ns.ignore_eos, extra_inputs=ns.extra_body,
                                   timeout_s=ns.timeout)
                return TritonGrpcClient(cfg)
            _http_only(base, kind)
            cfg = TritonConfig(url=base, model=ns.model, protocol="http",
                               ignore_eos=ns.ignore_eos, extra_inputs=ns.extra_body,
                               timeout_s=ns.timeout)
            return TritonHttpClient(cfg)
        _http_only(base, kind)
        if kind == "kserve":
            from loadgen.clients.kserve import KServeClient, KServeConfig, parse_tensor_spec

            specs = tuple(parse_tensor_spec(s) for s in ns.kserve_input)
            return KServeClient(KServeConfig(
                base_url=base, model=ns.model, inputs=specs,
                payload_files=tuple(ns.payload_file), outputs=tuple(ns.kserve_output),
                binary=not ns.kserve_json, headers=headers, timeout_s=ns.timeout))
        from loadgen.clients.http import HttpClient, HttpConfig

        template = ns.body_template
        if template is not None and template.startswith("@"):
            template = Path(template[1:]).read_text()
        return HttpClient(HttpConfig(
            base_url=base, model=ns.model, method=ns.http_method, path=ns.http_path,
            body_template=template, payload_files=tuple(ns.payload_file),
            content_type=ns.content_type, expect_status=tuple(ns.expect_status),
            headers=headers, timeout_s=ns.timeout))
    except (ValueError, OSError) as e:
        raise UsageError(f"--client {kind}: {e}") from None


def _http_only(base: str, kind: str) -> None:
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--client {kind}: --base-url must start with http:// or https://, "
                         f"got {base!r}")
