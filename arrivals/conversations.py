"""Session workloads: conversations (from a dataset or a trace) turned into chained requests.

A :class:`Conversation` is a list of turns ``(user text, recorded assistant reply)``. Turn k
of a conversation becomes one request whose context is the history so far, built from the
*recorded* replies: ``[system], user_0, assistant_0, ..., user_{k-1}, assistant_{k-1},
user_k``. The live answers of the server are not fed back, so that every request body is
built before t0 and the same work is sent to every system compared (a faster or more
verbose server does not change what the next turn sends). Completions endpoints get the
history flattened as ``"User: ...\\n\\nAssistant: ...\\n\\nUser: ..."`` (``"System: ..."``
first when there is one), chat endpoints get it as ``messages``.

- :func:`dataset_session_workload`: conversations (ShareGPT) drawn as a seeded permutation;
  first turns on an arrival process; think times from a stated distribution.
- :func:`trace_session_workload`: a trace's rows grouped by session id (BurstGPT's 8-column
  layout, or a csv/jsonl trace with a ``session_id`` column); first turns at the trace's
  times; think times from the trace (next request time - (this request time + its elapsed
  time)) or a stated distribution; synthetic text of the trace's lengths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from arrivals.datasets._common import word_count
from arrivals.processes import schedule
from arrivals.prompts import word_prompts
from arrivals.sessions import Sessions
from arrivals.think import ThinkTime
from arrivals.traces.trace import Trace
from arrivals.workload import Workload

_LABEL = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class Conversation:
    """One conversation: its id, an optional system prompt, and its turns in order."""

    id: str
    turns: list[tuple[str, str | None]]  # (user text, recorded assistant reply or None)
    system: str | None = None


def history(conv: Conversation, k: int) -> list[dict[str, str]]:
    """Chat messages of turn ``k``: the system prompt, turns < k with their recorded replies,
    and turn k's user text."""
    msgs = [{"role": "system", "content": conv.system}] if conv.system else []
    for user, reply in conv.turns[:k]:
        msgs.append({"role": "user", "content": user})
        msgs.append({"role": "assistant", "content": reply or ""})
    msgs.append({"role": "user", "content": conv.turns[k][0]})
    return msgs


def flatten(messages: list[dict[str, str]]) -> str:
    """The completions prompt of a history: ``"User: ...\\n\\nAssistant: ..."``."""
    return "\n\n".join(f"{_LABEL.get(m['role'], m['role'])}: {m['content']}" for m in messages)


def _build(
    convs: list[Conversation],
    think: list[np.ndarray],
    session_ids: list[str],
    counter: Callable[[str], int],
) -> tuple[list[str], np.ndarray, Sessions]:
    """Requests of every conversation, each session's turns contiguous, sessions in order."""
    prompts: list[str] = []
    msgs_all: list[list[dict[str, str]]] = []
    sid: list[str] = []
    turn: list[int] = []
    th: list[float] = []
    nxt: list[int] = []
    for c, conv in enumerate(convs):
        n = len(conv.turns)
        base = len(prompts)
        for k in range(n):
            m = history(conv, k)
            msgs_all.append(m)
            prompts.append(flatten(m))
            sid.append(session_ids[c])
            turn.append(k)
            th.append(0.0 if k == 0 else float(think[c][k - 1]))
            nxt.append(base + k + 1 if k + 1 < n else -1)
    inp = np.maximum(np.fromiter((counter(p) for p in prompts), np.int64, len(prompts)), 1)
    ss = Sessions(session_id=sid, turn=np.asarray(turn, np.int64),
                  think_s=np.asarray(th, np.float64), next_turn=np.asarray(nxt, np.int64),
                  messages=msgs_all)
    return prompts, inp, ss


def _times(starts: np.ndarray, convs: list[Conversation]) -> np.ndarray:
    t = []
    for s, conv in zip(starts.tolist(), convs, strict=True):
        t.append(s)
        t.extend([math.nan] * (len(conv.turns) - 1))
    return np.asarray(t, dtype=np.float64)


def dataset_session_workload(
    convs: list[Conversation],
    *,
    dataset: str,
    num_sessions: int | None = None,
    request_rate: float = math.inf,
    process: str = "poisson",
    burstiness: float = 1.0,
    think: ThinkTime,
    output_len: int | None = None,
    default_output_len: int = 128,
    max_turns: int | None = None,
    token_counter: Callable[[str], int] | None = None,
    token_counter_name: str = "words",
    seed: int = 0,
    info: dict[str, Any] | None = None,
) -> Workload:
    """``num_sessions`` conversations (default: each once), first turns at ``request_rate``
    sessions/s, later turns ``think`` seconds after the previous response ends.

    ``output_tokens`` of a turn is ``output_len`` if given, else the token count of its
    recorded reply, else ``default_output_len`` (a last user turn with no reply).
    """
    if not convs:
        raise ValueError(f"{dataset}: no conversation with a user turn")
    if max_turns is not None:
        convs = [Conversation(c.id, c.turns[:max_turns], c.system) for c in convs]
    counter = token_counter or word_count
    n = num_sessions or len(convs)
    ss = np.random.SeedSequence([seed, 0x5E55])
    r_order, r_think = (np.random.default_rng(s) for s in ss.spawn(2))
    reps = math.ceil(n / len(convs))
    idx = np.concatenate([r_order.permutation(len(convs)) for _ in range(reps)])[:n]
    chosen = [convs[i] for i in idx.tolist()]
    starts = schedule(process, request_rate, n, burstiness=burstiness, seed=seed)
    thinks = [think.sample(len(c.turns) - 1, r_think) for c in chosen]
    src = {"fixed": 0, "reference": 0, "default": 0}
    outs = []
    for c in chosen:
        o = np.empty(len(c.turns), np.int64)
        for k, (_, reply) in enumerate(c.turns):
            if output_len is not None:
                o[k], key = output_len, "fixed"
            elif reply is not None and reply.strip():
                o[k], key = max(1, counter(reply)), "reference"
            else:
                o[k], key = default_output_len, "default"
            src[key] += 1
        outs.append(o)
    sids = [f"{k}:{c.id}" for k, c in enumerate(chosen)]
    prompts, inp, sess = _build(chosen, thinks, sids, counter)
    desc: dict[str, Any] = {
        "kind": "dataset_sessions",
        "dataset": dataset,
        "dataset_info": info or {},
        "conversations": len(convs),
        "num_sessions": n,
        "num_requests": len(prompts),
        "repeated_passes": reps,
        "process": process,
        "request_rate": request_rate,
        "rate_of": "session starts (first turns); later turns follow think times",
        "burstiness": burstiness,
        "seed": seed,
        "think_time": {"source": "distribution", **think.describe()},
        "max_turns": max_turns,
        "history": "recorded assistant turns of the dataset (not the server's live answers)",
        "token_count": token_counter_name,
        "output_len_source": src,
        "output_len_fixed": output_len,
        "prompt_text": f"{dataset} conversations with their history (no chat template on "
                       "completions; messages on chat endpoints)",
    }
    wl = Workload(t_intended=_times(starts, chosen), prompts=prompts, input_tokens=inp,
                  output_tokens=np.concatenate(outs), dataset=dataset,
                  item_ids=[c.id for c in chosen for _ in c.turns], description=desc,
                  sessions=sess)
    return _with_sessions_info(wl)


def _with_sessions_info(wl: Workload) -> Workload:
    from dataclasses import replace

    assert wl.sessions is not None
    return replace(wl, description={**wl.description, "sessions": wl.sessions.describe()})


def _time_scale(trace: Trace) -> float:
    """Product of the trace's declared speed-up factors (think times scale with them)."""
    f = 1.0
    for tr in trace.transforms:
        if tr.get("op") == "speedup":
            f *= float(tr["factor"])
    return f


def trace_session_workload(
    trace: Trace,
    *,
    seed: int = 0,
    think: ThinkTime | None = None,
    input_mode: str = "total",
    drop_failed: bool = True,
    max_sessions: int | None = None,
    token_counter: Callable[[str], int] | None = None,
    token_counter_name: str = "words",
) -> Workload:
    """The trace's sessions as chained requests (see the module docstring).

    Rows with the same ``session_id`` (in time order) are the turns of one session; a row
    with an empty or missing id is a session of its own. ``input_mode`` says what the
    trace's input length of a turn counts: ``total`` (the whole prompt the service saw,
    history included: the new user text gets input - history tokens, at least 1) or
    ``turn`` (only the new user text: the history comes on top). Think time of turn k+1 is
    ``t[k+1] - t[k] - elapsed[k] / speedup`` (clipped at 0) when the trace has an elapsed
    time per request, ``t[k+1] - t[k]`` when it has not, and a draw of ``think`` when given.
    """
    if input_mode not in ("total", "turn"):
        raise ValueError(f"input_mode must be 'total' or 'turn', got {input_mode!r}")
    if "session_id" not in trace.extra:
        raise ValueError(f"{trace.source}: this {trace.format} trace has no session id column "
                         "(BurstGPT's 8-column layout has 'Session ID'; for csv/jsonl map one "
                         "with --trace-columns ...,session_id=COL)")
    failed = ~trace.ok
    n_failed = int(failed.sum())
    tr = trace.take(~failed) if drop_failed and n_failed else trace
    if len(tr) == 0:
        raise ValueError(f"{trace.source}: no successful request left to replay")
    counter = token_counter or word_count
    raw_sid = [str(s).strip() for s in tr.extra["session_id"]]
    elapsed = tr.extra.get("elapsed_time")
    scale = _time_scale(tr)
    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for i, s in enumerate(raw_sid):
        key = s if s else f"<row {int(tr.row[i])}>"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(i)  # trace rows are sorted by time, so turns are in order
    if max_sessions is not None:
        order = order[:max_sessions]
    ss = np.random.SeedSequence([seed, 0x7ACE])
    r_text, r_think = (np.random.default_rng(s) for s in ss.spawn(2))
    inp_tr = np.maximum(tr.input_tokens, 1)
    out_tr = np.maximum(tr.output_tokens, 1)
    convs: list[Conversation] = []
    thinks: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    starts: list[float] = []
    clipped_think = history_over = 0
    for key in order:
        rows = groups[key]
        starts.append(float(tr.t[rows[0]]))
        if think is not None:
            th = think.sample(len(rows) - 1, r_think)
        else:
            gaps = np.diff(tr.t[rows])
            if elapsed is not None:
                gaps = gaps - np.asarray([elapsed[i] for i in rows[:-1]], np.float64) / scale
            clipped_think += int((gaps < 0).sum())
            th = np.maximum(gaps, 0.0)
        replies = word_prompts(out_tr[rows], r_text)
        turns: list[tuple[str, str | None]] = []
        hist_words = 0
        for k, i in enumerate(rows):
            want = int(inp_tr[i])
            if input_mode == "total":
                label = 1  # "User:" (one word of the flattened prompt)
                new = want - hist_words - label
                if new < 1:
                    history_over += 1
                    new = 1
            else:
                new = want
            user = word_prompts(np.array([new]), r_text)[0]
            turns.append((user, replies[k]))
            hist_words += 1 + new + 1 + int(out_tr[i])  # User: text Assistant: reply
        convs.append(Conversation(id=key, turns=turns))
        thinks.append(th)
        outs.append(out_tr[rows].astype(np.int64))
    st = np.asarray(starts, dtype=np.float64)
    st = st - st[0]
    prompts, inp, sess = _build(convs, thinks, [c.id for c in convs], counter)
    name = trace.source.rsplit("/", 1)[-1]
    item_ids = [f"{name}:{int(tr.row[i])}" for key in order for i in groups[key]]
    desc: dict[str, Any] = {
        "kind": "trace_sessions",
        "trace": trace.describe(),
        "request_rate": float((len(st) - 1) / st[-1]) if len(st) > 1 and st[-1] > 0 else None,
        "rate_of": "session starts (first turns); later turns follow think times",
        "seed": seed,
        "failed_in_trace": n_failed,
        "failed_dropped": n_failed if drop_failed else 0,
        "max_sessions": max_sessions,
        "input_mode": input_mode,
        "history_longer_than_trace_input": history_over if input_mode == "total" else None,
        "think_time": ({"source": "distribution", **think.describe()} if think is not None
                       else {"source": "trace", "elapsed_time_column": elapsed is not None,
                             "speedup": scale, "clipped_to_zero": clipped_think}),
        "history": "synthetic assistant text of each turn's recorded output length",
        "token_count": token_counter_name,
        "prompt_text": "random common English words of the trace's lengths, with the history",
    }
    wl = Workload(t_intended=_times(st, convs), prompts=prompts, input_tokens=inp,
                  output_tokens=np.concatenate(outs), dataset=f"trace:{trace.format}",
                  item_ids=item_ids, description=desc, sessions=sess)
    return _with_sessions_info(wl)
