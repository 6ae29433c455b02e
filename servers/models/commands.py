"""``loadgen models make-tiny``: write a tiny random-weight model for tests and demos.

Registered through ``loadgen.cli.COMMAND_MODULES``. ``--format gguf`` (default) writes one
GGUF file for llama.cpp; ``--format hf`` writes a Hugging Face model directory (safetensors,
tokenizer, chat template) for the PyTorch server and vLLM. Exit codes: 0 written, 1 could not
write (or a needed package is missing), 2 bad flags.
"""

from __future__ import annotations

import argparse
import sys

FORMATS = ("gguf", "hf")


def register(subparsers: argparse._SubParsersAction) -> None:
    m = subparsers.add_parser("models", help="make tiny models for tests and demos",
                              description="Tools for models that the servers serve.")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    t = msub.add_parser(
        "make-tiny", help="write a random-weight llama model (GGUF for llama.cpp, or a "
        "Hugging Face directory for PyTorch and vLLM)",
        description="Write a random-weight llama-architecture model. gguf: one file with a "
        "SentencePiece-style byte-fallback vocabulary, BOS/EOS and a chat template, for "
        "llama.cpp (tiny ~0.16 M parameters, ~0.3 MB; small ~24 M, ~48 MB). hf: a Hugging Face "
        "directory (LlamaForCausalLM safetensors, a byte-level BPE tokenizer trained locally, "
        "chat template, greedy generation config) for the PyTorch server and vLLM (tiny ~0.2 M "
        "parameters; small ~25 M). tiny is for fast tests; small gives realistic per-token "
        "timing on a CPU. Output text is gibberish; timings are real. Nothing is downloaded.")
    t.add_argument("output", help="file (gguf, e.g. models/tiny.gguf) or directory (hf, e.g. "
                   "models/tiny-hf) to write")
    t.add_argument("--format", choices=FORMATS, default="gguf",
                   help="gguf (llama.cpp; default) or hf (Hugging Face directory: PyTorch, vLLM)")
    t.add_argument("--size", choices=("tiny", "small"), default="tiny",
                   help="model size (default %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    t.set_defaults(handler=cmd_make_tiny)


def cmd_make_tiny(ns: argparse.Namespace) -> int:
    if ns.format == "hf":
        return _make_tiny_hf(ns)
    from servers.models.gguf_tiny import SIZES, build_vocab, param_count, write_tiny_gguf

    try:
        path = write_tiny_gguf(ns.output, size=ns.size, seed=ns.seed)
    except ImportError as e:
        print(f"loadgen models make-tiny: needs the 'gguf' package ({e}); "
              "pip install 'llm-loadgen[llamacpp]'", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"loadgen models make-tiny: cannot write {ns.output!r}: {e}", file=sys.stderr)
        return 1
    n = param_count(SIZES[ns.size], len(build_vocab()[0]))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {n / 1e6:.2f} M parameters, "
          f"llama, random weights, seed {ns.seed})")
    return 0


def _make_tiny_hf(ns: argparse.Namespace) -> int:
    from servers.models.hf_tiny import make_tiny_hf, param_count

    try:
        path = make_tiny_hf(ns.output, size=ns.size, seed=ns.seed)
    except ImportError as e:
        print(f"loadgen models make-tiny --format hf: needs torch, transformers and tokenizers "
              f"({e}); pip install 'llm-loadgen[torch]'", file=sys.stderr)
        return 1
    except (OSError, FileExistsError) as e:
        print(f"loadgen models make-tiny: cannot write {ns.output!r}: {e}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    print(f"wrote {path}/ ({size / 1e6:.2f} MB, {param_count(path) / 1e6:.2f} M parameters, "
          f"LlamaForCausalLM, random weights, seed {ns.seed})")
    return 0
