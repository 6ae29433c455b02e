"""``loadgen models make-tiny``: write a tiny random-weight model for tests and demos.

Registered through ``loadgen.cli.COMMAND_MODULES``. Exit codes: 0 written, 1 could not
write (or the ``gguf`` package is missing), 2 bad flags.
"""

from __future__ import annotations

import argparse
import sys

FORMATS = ("gguf",)


def register(subparsers: argparse._SubParsersAction) -> None:
    m = subparsers.add_parser("models", help="make tiny models for tests and demos",
                              description="Tools for models that the servers serve.")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    t = msub.add_parser(
        "make-tiny", help="write a random-weight llama model (GGUF) that llama.cpp serves",
        description="Write a random-weight llama-architecture model with a SentencePiece-style "
        "byte-fallback vocabulary, BOS/EOS and a chat template. tiny: ~0.16 M parameters "
        "(~0.3 MB), for fast tests; small: ~24 M parameters (~48 MB), for realistic per-token "
        "timing on a CPU. Output text is gibberish; timings are real.")
    t.add_argument("output", help="file to write, e.g. models/tiny.gguf")
    t.add_argument("--format", choices=FORMATS, default="gguf", help="file format (gguf)")
    t.add_argument("--size", choices=("tiny", "small"), default="tiny",
                   help="model size (default %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    t.set_defaults(handler=cmd_make_tiny)


def cmd_make_tiny(ns: argparse.Namespace) -> int:
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
