"""Command line of the PyTorch server: ``python -m servers.pytorch`` and ``loadgen serve pytorch``.

torch and transformers are imported only when the server starts, so ``loadgen --help`` stays
fast and works without them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

DESCRIPTION = """\
OpenAI-compatible server for a Hugging Face causal LM on PyTorch (CPU or one GPU).
The model runs on a worker thread with greedy decoding; --batching continuous admits waiting
requests into free batch slots before every decode step, --batching static starts a new batch
(up to --max-batch-size waiting requests) only when the previous one has fully finished.
KV cache: per-layer left-padded tensors with a 2-D attention mask (servers/pytorch/engine.py).
"""


FLAGS = ("model", "served_model_name", "host", "port", "max_batch_size", "batching", "threads",
         "dtype", "device", "max_model_len")
"""The namespace attributes that add_arguments defines (reported by /version)."""


def default_threads() -> int:
    """Half the CPUs (at least 1): the other half is left to the event loop, tokenizer and a
    load generator on the same machine. On a busy 2-core machine 1 thread was far faster than 2
    (threads contending for a core stall every matrix multiply)."""
    return max(1, (os.cpu_count() or 2) // 2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="a local Hugging Face model directory, or a model name already in the "
                        "local HF cache (never downloaded)")
    p.add_argument("--served-model-name", default=None,
                   help="name listed in /v1/models and expected in requests (default: --model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8000,
                   help="TCP port; 0 picks a free one, printed at start (default %(default)s)")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="most sequences decoded together (default %(default)s)")
    p.add_argument("--batching", choices=("continuous", "static"), default="continuous",
                   help="continuous: join free slots at every step; static: a new batch only "
                        "when the last one is done (default %(default)s)")
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="torch.set_num_threads for the model (default: half the CPUs, at "
                        "least 1; here %(default)s)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="weights and activations (default %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 "
                   "(default %(default)s)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="prompt + max_tokens limit (default: the model's "
                        "max_position_embeddings)")


def server_info(ns: argparse.Namespace, versions: dict[str, Any]) -> dict[str, Any]:
    """What /version answers: the runtime, its versions and every flag."""
    flags = {k: getattr(ns, k) for k in FLAGS}
    return {"server": "llm-loadgen-pytorch", "versions": versions, "flags": flags}


def run(ns: argparse.Namespace) -> int:
    """Load the model and serve until SIGINT/SIGTERM, then exit the process with 0 at once;
    return 1 if the model cannot load or the port cannot be bound, 2 for bad flag values."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if ns.max_batch_size < 1 or ns.threads < 1:
        print("pytorch server: --max-batch-size and --threads must be >= 1", file=sys.stderr)
        return 2
    import torch
    import transformers
    import uvloop
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from servers.pytorch.app import ServerConfig, make_app, serve
    from servers.pytorch.engine import Engine

    torch.set_num_threads(ns.threads)
    torch.set_num_interop_threads(1)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ns.model, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            ns.model, local_files_only=True, dtype=getattr(torch, ns.dtype),
        ).to(ns.device).eval()
    except (OSError, ValueError) as exc:
        print(f"pytorch server: cannot load model {ns.model!r} from a local directory or the "
              f"local HF cache (no downloads): {exc}", file=sys.stderr)
        return 1
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    eos_ids = [e for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    max_len = ns.max_model_len or getattr(model.config, "max_position_embeddings", 2048)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    name = ns.served_model_name or ns.model
    engine = Engine(model, eos_ids, max_batch=ns.max_batch_size, batching=ns.batching,
                    threads=ns.threads, device=ns.device)
    warm_s = engine.warmup(tokenizer.bos_token_id or 0)
    app = make_app(engine, tokenizer, ServerConfig(name, max_len, server_info(ns, versions)))

    def ready(url: str) -> None:
        print(f"pytorch server listening on {url} (model {name}, batching {ns.batching}, "
              f"max batch {ns.max_batch_size}, threads {ns.threads}, warm-up {warm_s:.2f} s)",
              flush=True)

    try:
        uvloop.run(serve(app, ns.host, ns.port, on_ready=ready))
    except OSError as exc:
        print(f"pytorch server: cannot listen on {ns.host}:{ns.port}: {exc}", file=sys.stderr)
        return 1
    # Stopped cleanly (engine joined, connections closed). Skip the interpreter's teardown of
    # torch and transformers, which takes seconds on a busy machine and does nothing useful.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m servers.pytorch", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def register(subparsers: Any) -> None:
    """``loadgen serve pytorch`` (loadgen.cli SERVE_MODULES)."""
    p = subparsers.add_parser("pytorch", help="our OpenAI-compatible server for a Hugging Face "
                              "model on PyTorch, with static or continuous batching",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    add_launch_arguments(p)
    from servers.serve_cli import add_uniform_arguments

    add_uniform_arguments(p, positional_model=False, no_tensor_parallel="our PyTorch server "
                          "runs the model on one device (--device)")
    p.set_defaults(handler=cmd_serve)


def add_launch_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``loadgen serve pytorch`` (not of ``python -m servers.pytorch``): with
    --info-json or --profile the server runs as a child through the common lifecycle."""
    from servers.profile_flags import add_profile_arguments

    g = p.add_argument_group("launched as a child (with --info-json or --profile)")
    g.add_argument("--info-json", default=None, metavar="FILE",
                   help="start the server as a child process (servers/launch.py) and write "
                   "its info (runtime, version, argv, profile) to FILE, for `loadgen run "
                   "--server-info FILE`")
    g.add_argument("--log-dir", default="results/servers",
                   help="the child's log folder (default %(default)s)")
    g.add_argument("--startup-timeout", type=float, default=300.0,
                   help="seconds to wait until the child serves the model (default 300)")
    add_profile_arguments(g)


def launch_settings(ns: argparse.Namespace) -> tuple[Any, Any]:
    """(PytorchRuntime, ServeSettings) that start the server the flags describe as a child."""
    from pathlib import Path

    from servers.launch import ServeSettings
    from servers.profile_flags import profile_settings
    from servers.pytorch.runtime import PytorchRuntime

    extra = ["--dtype", ns.dtype, "--device", ns.device]
    if ns.max_model_len is not None:
        extra += ["--max-model-len", str(ns.max_model_len)]
    settings = ServeSettings(model=ns.model, max_batch_size=ns.max_batch_size, host=ns.host,
                             port=ns.port, served_model_name=ns.served_model_name,
                             extra_args=tuple(extra), log_dir=Path(ns.log_dir),
                             startup_timeout_s=ns.startup_timeout, **profile_settings(ns))
    return PytorchRuntime(batching=ns.batching, threads=ns.threads), settings


def cmd_serve(ns: argparse.Namespace) -> int:
    """``loadgen serve pytorch``: in this process, or as a child for --info-json/--profile."""
    from servers.profile_flags import launched

    if not launched(ns):
        return run(ns)
    from servers.serve_cli import serve

    runtime, settings = launch_settings(ns)
    return serve(runtime, settings, ns.info_json)
