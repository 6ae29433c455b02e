"""``loadgen env diff A B``: what differs between two environments (or two runs).

A and B are run directories (their manifest.json: environment, server, tool, config) or JSON
files written by ``loadgen env --json``. Nested dicts are flattened to dotted keys; lists are
compared whole. The ``sources`` bookkeeping and the collection time are not compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

IGNORED_LEAVES = ("collect_s",)
RUN_SECTIONS = ("environment", "server", "tool")
_MISSING = object()


def load_env(path: str | Path) -> dict[str, Any]:
    """The comparable part of a run directory's manifest, or an env JSON file."""
    p = Path(path)
    f = p / "manifest.json" if p.is_dir() else p
    try:
        doc = orjson.loads(f.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"{f}: no such file; give a run directory (with manifest.json) "
                                "or a file written by `loadgen env --json`") from None
    except orjson.JSONDecodeError as e:
        raise ValueError(f"{f} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{f}: expected a JSON object")
    if "environment" in doc:  # a run (or probe) manifest
        out = {k: doc[k] for k in RUN_SECTIONS if k in doc}
    else:
        out = {"environment": doc}
    env = out["environment"]
    if isinstance(env, dict) and "tool" in env:  # the same tool info, compared once
        out["environment"] = {k: v for k, v in env.items() if k != "tool"}
        out.setdefault("tool", env["tool"])
    return out


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; a field ``{"unavailable": r}`` stays one leaf."""
    if isinstance(d, dict) and d and not (len(d) == 1 and "unavailable" in d):
        out: dict[str, Any] = {}
        for k, v in d.items():
            if k == "sources" or k in IGNORED_LEAVES:
                continue
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, value in A, value in B) for every leaf that differs, sorted by key."""
    fa, fb = flatten(a), flatten(b)
    out = []
    for k in sorted(set(fa) | set(fb)):
        va, vb = fa.get(k, _MISSING), fb.get(k, _MISSING)
        if va != vb:
            out.append((k, va, vb))
    return out


def _show(v: Any, width: int = 60) -> str:
    if v is _MISSING:
        return "(absent)"
    s = orjson.dumps(v).decode() if not isinstance(v, str) else v
    return s if len(s) <= width else s[: width - 3] + "..."


def render(rows: list[tuple[str, Any, Any]], a_name: str, b_name: str) -> str:
    if not rows:
        return f"no differences between {a_name} and {b_name}"
    lines = [f"{len(rows)} difference(s): A = {a_name}, B = {b_name}"]
    for k, va, vb in rows:
        lines.append(f"{k}\n  A: {_show(va)}\n  B: {_show(vb)}")
    return "\n".join(lines)


def rows_json(rows: list[tuple[str, Any, Any]]) -> list[dict[str, Any]]:
    return [{"key": k, "a": None if va is _MISSING else va, "b": None if vb is _MISSING else vb,
             "in_a": va is not _MISSING, "in_b": vb is not _MISSING} for k, va, vb in rows]
