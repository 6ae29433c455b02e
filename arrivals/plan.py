"""Plans: a complete Workload written to a file, and read back exactly, for replay.

Format: JSONL (UTF-8, LF), written with orjson with sorted keys, so the same workload always
gives the same bytes. Line 1 is the header; each next line is one request, in order:

    {"dataset": "trace:burstgpt", "description": {...}, "format": "loadgen-plan",
     "num_requests": N, "version": 1}
    {"i": 0, "input_tokens": 472, "item_id": "BurstGPT_1.csv:2", "output_tokens": 18,
     "prompt": "the of ...", "t_intended": 0.0}

``t_intended`` is seconds from t0 (floats are written as the shortest text that reads back to
the same float64, so a plan read and written again is byte-identical); ``input_tokens`` is
the expected prompt length, ``output_tokens`` the max_tokens asked for, ``item_id`` the
request's source id (null when it has none). A plan is parsed as data, never executed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from arrivals.workload import Workload

FORMAT, VERSION = "loadgen-plan", 1
_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


class PlanError(ValueError):
    """A plan file is missing or malformed; the message names the file, line and field."""


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no inf/nan
    return v


def plan_bytes(wl: Workload) -> bytes:
    """The plan file's content for ``wl``."""
    head = {"format": FORMAT, "version": VERSION, "num_requests": len(wl),
            "dataset": wl.dataset, "description": _jsonable(wl.description)}
    parts = [orjson.dumps(head, option=_OPTS)]
    ids = wl.item_ids
    for i, (t, p, a, b) in enumerate(zip(wl.t_intended.tolist(), wl.prompts,
                                         wl.input_tokens.tolist(), wl.output_tokens.tolist(),
                                         strict=True)):
        parts.append(orjson.dumps({"i": i, "t_intended": t, "prompt": p, "input_tokens": a,
                                   "output_tokens": b,
                                   "item_id": ids[i] if ids is not None else None}, option=_OPTS))
    return b"".join(parts)


def write_plan(wl: Workload, path: str | Path) -> Path:
    """Write the plan of ``wl`` to ``path`` (JSONL) and return the path."""
    p = Path(path)
    p.write_bytes(plan_bytes(wl))
    return p


def _field(path: Path, line: int, rec: dict, key: str, kind: type) -> Any:
    if key not in rec:
        raise PlanError(f"{path}:{line}: missing field {key!r}; is this a plan written by "
                        "`loadgen plan`?")
    v = rec[key]
    ok = isinstance(v, kind) and not isinstance(v, bool)
    if kind is float:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if not ok:
        raise PlanError(f"{path}:{line}: field {key!r} must be {kind.__name__}, got {v!r}")
    return v


def read_plan(path: str | Path) -> Workload:
    """Read a plan file back into the Workload that was written."""
    p = Path(path)
    if not p.is_file():
        raise PlanError(f"{p}: no such plan file; write one with `loadgen plan ... --output {p}`")
    t: list[float] = []
    prompts: list[str] = []
    inp: list[int] = []
    out: list[int] = []
    ids: list[str | None] = []
    head: dict | None = None
    with p.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise PlanError(f"{p}:{line}: not valid JSON ({e})") from None
            if not isinstance(rec, dict):
                raise PlanError(f"{p}:{line}: expected a JSON object")
            if head is None:
                if rec.get("format") != FORMAT or rec.get("version") != VERSION:
                    raise PlanError(f"{p}:1: not a {FORMAT} v{VERSION} file (header has format="
                                    f"{rec.get('format')!r}, version={rec.get('version')!r})")
                head = rec
                continue
            i = _field(p, line, rec, "i", int)
            if i != len(t):
                raise PlanError(f"{p}:{line}: field 'i' is {i}, expected {len(t)} (requests "
                                "must be in order, none missing)")
            t.append(float(_field(p, line, rec, "t_intended", float)))
            prompts.append(_field(p, line, rec, "prompt", str))
            inp.append(_field(p, line, rec, "input_tokens", int))
            out.append(_field(p, line, rec, "output_tokens", int))
            iid = rec.get("item_id")
            if iid is not None and not isinstance(iid, str):
                raise PlanError(f"{p}:{line}: field 'item_id' must be a string or null")
            ids.append(iid)
    if head is None:
        raise PlanError(f"{p}: empty file; expected a plan header line")
    if head.get("num_requests") != len(t):
        raise PlanError(f"{p}: header says {head.get('num_requests')} requests but the file has "
                        f"{len(t)} (truncated?)")
    try:
        return Workload(
            t_intended=np.asarray(t, dtype=np.float64), prompts=prompts,
            input_tokens=np.asarray(inp, dtype=np.int64),
            output_tokens=np.asarray(out, dtype=np.int64),
            dataset=str(head.get("dataset", "plan")),
            item_ids=None if all(x is None for x in ids) else [x or "" for x in ids],
            description=dict(head.get("description") or {}),
        )
    except ValueError as e:
        raise PlanError(f"{p}: {e}") from None
