"""ShareGPT conversations: ``[{"id", "conversations": [{"from", "value"}, ...]}, ...]``.

``from`` is ``human``, ``gpt`` or ``system`` (``user``/``assistant`` are accepted too).
Long chats in ShareGPT V3 are split into parts, so a conversation may start with a ``gpt``
turn: turns before the first non-empty human turn are skipped.

- ``multi_turn=False`` (default, as ``vllm bench serve``): the prompt is the first human turn,
  the reference answer the gpt turn right after it (None if there is none).
- ``multi_turn=True``: the whole conversation up to its last human turn, flattened as
  ``"User: ...\\n\\nAssistant: ...\\n\\nUser: ..."`` (a leading system turn is kept as
  ``"System: ..."``); the reference is the gpt turn after that last human turn.

Conversations with no non-empty human turn are skipped and counted in
``info["skipped_no_human_turn"]``.
"""

from __future__ import annotations

from pathlib import Path

from arrivals.datasets._common import DatasetError, DatasetItems, read_json_file

_HUMAN, _GPT = {"human", "user"}, {"gpt", "assistant", "chatgpt", "bard", "bing"}
_LABEL = {"human": "User", "user": "User", "system": "System"}


def _turns(path: Path, i: int, rec: object) -> tuple[str, list[tuple[str, str]]]:
    if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
        raise DatasetError(path, "expected an object with a 'conversations' list "
                           "(ShareGPT format)", item=i)
    turns = []
    for j, t in enumerate(rec["conversations"]):
        if not isinstance(t, dict) or not isinstance(t.get("from"), str) \
                or not isinstance(t.get("value"), str):
            raise DatasetError(path, f"turn {j}: expected {{'from': str, 'value': str}}, "
                               f"got {str(t)[:80]!r}", item=i)
        turns.append((t["from"].lower(), t["value"]))
    return str(rec.get("id", i)), turns


def read_sharegpt(path: str | Path, *, multi_turn: bool = False) -> DatasetItems:
    """Prompts (and reference answers) of a ShareGPT JSON file, in file order."""
    p = Path(path)
    data = read_json_file(p)
    if not isinstance(data, list):
        raise DatasetError(p, "expected a JSON array of conversations (ShareGPT format)")
    prompts: list[str] = []
    ids: list[str] = []
    refs: list[str | None] = []
    skipped = leading_gpt = 0
    for i, rec in enumerate(data):
        cid, turns = _turns(p, i, rec)
        humans = [k for k, (who, v) in enumerate(turns) if who in _HUMAN and v.strip()]
        if not humans:
            skipped += 1
            continue
        first = humans[0]
        leading_gpt += any(who in _GPT for who, _ in turns[:first])
        if multi_turn:
            last = humans[-1]
            system = [f"System: {v}" for who, v in turns[:first] if who == "system"]
            body = [f"{_LABEL.get(who, 'Assistant')}: {v}" for who, v in turns[first:last + 1]
                    if who != "system"]
            prompt, k = "\n\n".join(system + body), last
        else:
            prompt, k = turns[first][1], first
        ref = turns[k + 1][1] if k + 1 < len(turns) and turns[k + 1][0] in _GPT else None
        prompts.append(prompt)
        ids.append(cid)
        refs.append(ref)
    if not prompts:
        raise DatasetError(p, "no conversation with a human turn; is this a ShareGPT file?")
    return DatasetItems(name="sharegpt", source=str(p), prompts=prompts, item_ids=ids,
                        references=refs,
                        info={"conversations": len(data), "skipped_no_human_turn": skipped,
                              "started_with_gpt_turn": leading_gpt,
                              "mode": "multi_turn_flattened" if multi_turn else "first_turn"})


def read_sharegpt_conversations(path: str | Path) -> tuple[list, dict]:
    """Every conversation of a ShareGPT file as turns ``(user text, recorded reply)``, for
    multi-turn sessions (arrivals/conversations.py).

    Empty messages are dropped; leading gpt turns (a split conversation's continuation) are
    skipped; system turns before the first human turn become the system prompt, later ones
    are ignored (counted); consecutive messages of the same side are joined with a blank
    line, so turns alternate user/assistant. The last turn's reply is None when the
    conversation ends on a human message.
    """
    from arrivals.conversations import Conversation

    p = Path(path)
    data = read_json_file(p)
    if not isinstance(data, list):
        raise DatasetError(p, "expected a JSON array of conversations (ShareGPT format)")
    convs = []
    skipped = leading_gpt = late_system = merged = 0
    for i, rec in enumerate(data):
        cid, turns = _turns(p, i, rec)
        msgs = [(who, v) for who, v in turns if v.strip()]
        first = next((k for k, (who, _) in enumerate(msgs) if who in _HUMAN), None)
        if first is None:
            skipped += 1
            continue
        leading_gpt += any(who in _GPT for who, _ in msgs[:first])
        system = "\n\n".join(v for who, v in msgs[:first] if who == "system") or None
        blocks: list[list] = []  # [side, text]
        for who, v in msgs[first:]:
            side = "user" if who in _HUMAN else "assistant" if who in _GPT else None
            if side is None:
                late_system += 1
                continue
            if blocks and blocks[-1][0] == side:
                blocks[-1][1] += "\n\n" + v
                merged += 1
            else:
                blocks.append([side, v])
        pairs = []
        for k in range(0, len(blocks), 2):
            reply = blocks[k + 1][1] if k + 1 < len(blocks) else None
            pairs.append((blocks[k][1], reply))
        convs.append(Conversation(id=cid, turns=pairs, system=system))
    if not convs:
        raise DatasetError(p, "no conversation with a human turn; is this a ShareGPT file?")
    turns_n = [len(c.turns) for c in convs]
    return convs, {"conversations": len(data), "skipped_no_human_turn": skipped,
                   "started_with_gpt_turn": leading_gpt, "ignored_late_system_turns": late_system,
                   "merged_consecutive_same_side": merged, "mode": "sessions",
                   "turns": sum(turns_n), "max_turns": max(turns_n)}
