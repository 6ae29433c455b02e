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

Version 2 is written for workloads with multi-turn sessions (arrivals/sessions.py) and only
for them (a plan without sessions is still version 1, byte for byte as before). Its header
has ``"sessions": true`` and each line adds ``session_id``, ``turn``, ``think_s``,
``next_turn`` and, when the workload has chat histories, ``messages`` (a list of
``{"content", "role"}``); ``t_intended`` is null for turns > 0 (computed during the run).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from arrivals.sessions import Sessions
from arrivals.workload import Workload

FORMAT, VERSION = "loadgen-plan", 1
SESSION_VERSION = 2  # written only for workloads with sessions
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
    ss = wl.sessions
    head = {"format": FORMAT, "version": VERSION if ss is None else SESSION_VERSION,
            "num_requests": len(wl), "dataset": wl.dataset,
            "description": _jsonable(wl.description)}
    if ss is not None:
        head["sessions"] = True
    parts = [orjson.dumps(head, option=_OPTS)]
    ids = wl.item_ids
    if ss is not None:
        sid, turn, think, nxt = (ss.session_id, ss.turn.tolist(), ss.think_s.tolist(),
                                 ss.next_turn.tolist())
    for i, (t, p, a, b) in enumerate(zip(wl.t_intended.tolist(), wl.prompts,
                                         wl.input_tokens.tolist(), wl.output_tokens.tolist(),
                                         strict=True)):
        rec = {"i": i, "t_intended": t, "prompt": p, "input_tokens": a, "output_tokens": b,
               "item_id": ids[i] if ids is not None else None}
        if ss is not None:
            rec |= {"session_id": sid[i], "turn": turn[i], "think_s": think[i],
                    "next_turn": nxt[i]}
            if turn[i] > 0:
                rec["t_intended"] = None
            if ss.messages is not None:
                rec["messages"] = ss.messages[i]
        parts.append(orjson.dumps(rec, option=_OPTS))
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
    sess: dict[str, list] = {"session_id": [], "turn": [], "think_s": [], "next_turn": [],
                             "messages": []}
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
                if rec.get("format") != FORMAT or rec.get("version") not in (VERSION,
                                                                             SESSION_VERSION):
                    raise PlanError(f"{p}:1: not a {FORMAT} v{VERSION} or v{SESSION_VERSION} "
                                    f"file (header has format={rec.get('format')!r}, "
                                    f"version={rec.get('version')!r})")
                head = rec
                continue
            i = _field(p, line, rec, "i", int)
            if i != len(t):
                raise PlanError(f"{p}:{line}: field 'i' is {i}, expected {len(t)} (requests "
                                "must be in order, none missing)")
            if head.get("sessions"):
                _session_fields(p, line, rec, sess)
            if head.get("sessions") and sess["turn"][-1] > 0:
                if rec.get("t_intended") is not None:
                    raise PlanError(f"{p}:{line}: field 't_intended' must be null for turn "
                                    f"{sess['turn'][-1]} of a session")
                t.append(math.nan)
            else:
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
    sessions = None
    if head.get("sessions"):
        msgs = sess["messages"]
        if any(m is None for m in msgs) and not all(m is None for m in msgs):
            raise PlanError(f"{p}: 'messages' must be on every line of a session plan or on none")
        sessions = Sessions(session_id=sess["session_id"],
                            turn=np.asarray(sess["turn"], dtype=np.int64),
                            think_s=np.asarray(sess["think_s"], dtype=np.float64),
                            next_turn=np.asarray(sess["next_turn"], dtype=np.int64),
                            messages=None if not msgs or msgs[0] is None else msgs)
    try:
        return Workload(
            t_intended=np.asarray(t, dtype=np.float64), prompts=prompts,
            input_tokens=np.asarray(inp, dtype=np.int64),
            output_tokens=np.asarray(out, dtype=np.int64),
            dataset=str(head.get("dataset", "plan")),
            item_ids=None if all(x is None for x in ids) else [x or "" for x in ids],
            description=dict(head.get("description") or {}),
            sessions=sessions,
        )
    except ValueError as e:
        raise PlanError(f"{p}: {e}") from None


def _session_fields(path: Path, line: int, rec: dict, out: dict[str, list]) -> None:
    """Read one line's session fields into ``out`` (errors name the file, line and field)."""
    out["session_id"].append(_field(path, line, rec, "session_id", str))
    out["turn"].append(_field(path, line, rec, "turn", int))
    out["think_s"].append(float(_field(path, line, rec, "think_s", float)))
    out["next_turn"].append(_field(path, line, rec, "next_turn", int))
    m = rec.get("messages")
    if m is not None and not (isinstance(m, list) and all(
            isinstance(x, dict) and isinstance(x.get("role"), str)
            and isinstance(x.get("content"), str) for x in m)):
        raise PlanError(f"{path}:{line}: field 'messages' must be a list of "
                        "{\"role\": str, \"content\": str}")
    out["messages"].append(m)
