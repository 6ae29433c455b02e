"""Model sources of an experiment file: a path, a hub name, or a tiny model made here.

``loadgen-tiny:gguf`` / ``loadgen-small:gguf`` are the random-weight GGUF llamas of
``servers.models.gguf_tiny`` (llama.cpp), ``loadgen-tiny:hf`` / ``loadgen-small:hf`` the
Hugging Face-format ones of ``servers.models.hf_tiny`` (PyTorch, vLLM); each is written once
into the per-machine cache (``$LOADGEN_CACHE_DIR``) and reused. Anything else is passed to the
runtime as written, after ``${VAR:-default}`` expansion.
"""

from __future__ import annotations

TINY_PREFIX = "loadgen-"
TINY_SOURCES = {f"loadgen-{size}:{fmt}": (size, fmt) for size in ("tiny", "small")
                for fmt in ("gguf", "hf")}


def is_made_here(source: str) -> bool:
    return source in TINY_SOURCES


def resolve_source(source: str) -> str:
    """The path or name to give the runtime for ``source`` (making a tiny model if needed).
    Raises ImportError (a missing package, named) or OSError when a tiny model cannot be made."""
    from loadgen.matrix.sweepargs import expand_vars

    if source.startswith(TINY_PREFIX) and source not in TINY_SOURCES:
        raise ValueError(f"unknown tiny model {source!r}; use one of {', '.join(TINY_SOURCES)}")
    if source in TINY_SOURCES:
        size, fmt = TINY_SOURCES[source]
        if fmt == "gguf":
            from servers.models.gguf_tiny import cached_tiny_gguf

            return str(cached_tiny_gguf(size))
        from servers.models.hf_tiny import cached_tiny_hf

        return str(cached_tiny_hf(size))
    return expand_vars(source)
