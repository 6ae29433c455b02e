"""``python -m servers.triton`` (tritonserver + the OpenAI gateway) and ``loadgen serve triton``.

``python -m servers.triton --hf-model DIR ...`` writes a model repository (the HF model as a
decoupled, dynamically batched Triton model; optionally the image example), starts
``tritonserver`` as its child, waits until the models are ready, then serves the OpenAI
gateway (servers/triton/gateway.py) and prints ``listening on http://...``. SIGINT/SIGTERM
stop both. ``loadgen serve triton MODEL`` starts that process through the common lifecycle
(servers/launch.py, servers/triton/runtime.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadgen.flags import _positive_int
from servers.serve_cli import add_lifecycle_arguments

DESCRIPTION = """\
NVIDIA Triton Inference Server (from the nvidia-pytriton wheel, cached per machine) serving a
Hugging Face causal LM as a decoupled (streaming) Python-backend model with dynamic batching,
behind an OpenAI-compatible gateway. Triton's own HTTP (KServe v2, generate_stream), gRPC and
/metrics ports are served too (printed at start, and in the server info).
"""


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that shape the model repository and Triton's scheduling."""
    p.add_argument("--max-batch-size", type=_positive_int("--max-batch-size"), default=4,
                   help="Triton dynamic batching: most requests in one batch (config "
                   "max_batch_size; the batch-size axis; default %(default)s)")
    p.add_argument("--instances", type=_positive_int("--instances"), default=1,
                   help="model instances (instance_group count): batches decoded at once "
                   "(default %(default)s)")
    p.add_argument("--batching", choices=("dynamic", "continuous"), default="dynamic",
                   help="dynamic: Triton's dynamic batcher, each batch decoded to its end; "
                   "continuous: in-flight batching inside the model (default %(default)s)")
    p.add_argument("--threads", type=_positive_int("--threads"), default=1,
                   help="torch threads per model instance (default %(default)s)")
    p.add_argument("--max-queue-delay-us", type=int, default=0,
                   help="dynamic batching: microseconds to wait to fill a batch (default 0)")
    p.add_argument("--image-model", action="store_true",
                   help="also serve the non-LLM example model image_blur (KServe v2 infer)")
    p.add_argument("--triton-model", default=None,
                   help="Triton's name of the LLM (default: the served name with other "
                   "characters than [A-Za-z0-9_.-] replaced by _)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hf-model", required=True, help="local Hugging Face model directory")
    p.add_argument("--served-model-name", default=None,
                   help="model id of the OpenAI gateway (default: --hf-model)")
    p.add_argument("--host", default="127.0.0.1", help="address of every port (default "
                   "%(default)s)")
    p.add_argument("--port", type=int, default=8000, help="gateway port (default %(default)s)")
    p.add_argument("--triton-http-port", type=int, default=8010)
    p.add_argument("--triton-grpc-port", type=int, default=8011)
    p.add_argument("--triton-metrics-port", type=int, default=8012)
    p.add_argument("--model-repository", default=None, metavar="DIR",
                   help="write the model repository here and keep it (default: a temporary "
                   "directory, removed at exit)")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--triton-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed verbatim to tritonserver, repeatable")
    add_model_arguments(p)


def run(ns: argparse.Namespace) -> int:
    """Repository, tritonserver, gateway; returns when stopped (0) or on failure (1)."""
    import signal

    import uvloop

    from servers.pytorch.app import serve
    from servers.triton.dist import ensure_triton
    from servers.triton.gateway import GatewayConfig, make_app
    from servers.triton.repository import ImageModel, LlmModel, triton_model_name, write_repository
    from servers.triton.server import TritonChild, TritonPorts

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # until the gateway's loop takes over
    served = ns.served_model_name or ns.hf_model
    tmodel = ns.triton_model or triton_model_name(served)
    try:
        llm = LlmModel(tmodel, str(Path(ns.hf_model).resolve()), ns.max_batch_size,
                       ns.instances, ns.batching, ns.threads, ns.max_queue_delay_us)
        models: list[Any] = [llm] + ([ImageModel()] if ns.image_model else [])
        dist = ensure_triton()
    except (ValueError, OSError, RuntimeError) as e:
        print(f"triton: {e}", file=sys.stderr)
        return 1
    tmp = None
    if ns.model_repository:
        repo = Path(ns.model_repository)
    else:
        tmp = tempfile.mkdtemp(prefix="loadgen-triton-repo-")
        repo = Path(tmp)
    write_repository(repo, models)
    ports = TritonPorts(ns.triton_http_port, ns.triton_grpc_port, ns.triton_metrics_port)
    print(f"triton: model repository {repo}: {[m.name for m in models]}", flush=True)
    child = TritonChild.start(dist, repo, ns.host, ports, tuple(ns.triton_arg))
    try:
        try:
            child.wait_ready([m.name for m in models], ns.startup_timeout)
        except KeyboardInterrupt:
            return 0
        except RuntimeError as e:
            print(f"triton: {e}", file=sys.stderr, flush=True)
            return 1
        endpoints = {"http": f"http://{ns.host}:{ports.http}",
                     "grpc": f"{ns.host}:{ports.grpc}",
                     "metrics": f"http://{ns.host}:{ports.metrics}/metrics"}
        info = {"endpoints": endpoints, "tritonserver_argv": child.argv,
                "model_repository": str(repo), "dist": dist.info(),
                "flags": {k: v for k, v in vars(ns).items() if k != "handler"}}
        cfg = GatewayConfig(served_model_name=served, triton_model=tmodel,
                            grpc_target=endpoints["grpc"], metrics_url=endpoints["metrics"],
                            batched=True, info=info)

        def ready(url: str) -> None:
            print(f"triton gateway listening on {url} (model {served!r} -> Triton "
                  f"{tmodel!r}; Triton {json.dumps(endpoints)})", flush=True)

        try:
            uvloop.run(serve(make_app(cfg), ns.host, ns.port, on_ready=ready))
        except OSError as e:
            print(f"triton gateway: cannot listen on {ns.host}:{ns.port}: {e}", file=sys.stderr)
            return 1
        return 0
    finally:
        rc = child.stop()
        print(f"triton: tritonserver stopped (exit code {rc})", flush=True)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m servers.triton", description=DESCRIPTION)
    add_arguments(p)
    return run(p.parse_args(argv))


def register(subparsers: Any) -> None:
    """``loadgen serve triton`` (loadgen.cli SERVE_MODULES)."""
    p = subparsers.add_parser(
        "triton", help="NVIDIA Triton (from the nvidia-pytriton wheel) serving a Hugging Face "
        "model with dynamic batching, behind an OpenAI-compatible gateway",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="local Hugging Face model directory (make one with "
                   "`loadgen models make-tiny --format hf OUT`)")
    p.add_argument("--install", action="store_true",
                   help="install (or find) the pinned Triton server, print where; with a "
                   "model, then serve it")
    add_lifecycle_arguments(p, served_model_default="the model directory's name",
                            info_note="runtime, version, argv, ports", port_help="gateway port")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `python -m servers.triton`, repeatable (e.g. "
                   "--server-arg=--triton-arg=--log-verbose=1)")
    add_model_arguments(p)
    from servers.serve_cli import add_uniform_arguments

    add_uniform_arguments(p, no_tensor_parallel="each model instance runs on one device; "
                          "--instances adds instances")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(ns: argparse.Namespace) -> int:
    from loadgen.flags import UsageError
    from servers.launch import ServeSettings
    from servers.profile_flags import profile_settings
    from servers.serve_cli import serve
    from servers.triton.dist import TritonInstallError, ensure_triton
    from servers.triton.runtime import TritonRuntime

    if ns.model is None and not ns.install:
        raise UsageError("give a Hugging Face model directory to serve, or --install")
    profile = profile_settings(ns)  # a missing profiler is said before any install
    try:
        dist = ensure_triton()
    except (TritonInstallError, FileNotFoundError) as e:
        print(f"loadgen serve triton: {e}", file=sys.stderr)
        return 1
    if ns.model is None:
        print(dist.root)
        print(json.dumps(dist.info(), indent=2), file=sys.stderr)
        return 0
    if not Path(ns.model).is_dir():
        raise UsageError(f"model {ns.model!r} is not a directory; give a local Hugging Face "
                         "model directory (make a test one with `loadgen models make-tiny "
                         "--format hf OUT`)")
    runtime = TritonRuntime(batching=ns.batching, instances=ns.instances, threads=ns.threads,
                            max_queue_delay_us=ns.max_queue_delay_us,
                            image_model=ns.image_model, triton_model=ns.triton_model)
    settings = ServeSettings(model=str(Path(ns.model).resolve()),
                             max_batch_size=ns.max_batch_size, host=ns.host, port=ns.port,
                             served_model_name=ns.served_model_name,
                             extra_args=tuple(ns.server_arg), log_dir=Path(ns.log_dir),
                             startup_timeout_s=ns.startup_timeout, **profile)
    return serve(runtime, settings, ns.info_json)
