"""Custom prompts: JSONL, one ``{"prompt": str, "output_len"?: int, "id"?: str}`` per line.

``output_len`` (the max_tokens to ask for) is optional per line; lines without it get the
workload's fixed or default output length. ``id`` defaults to the line number.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from arrivals.datasets._common import DatasetError, DatasetItems


def read_jsonl_prompts(path: str | Path) -> DatasetItems:
    """Prompts of a JSONL file; a bad line raises DatasetError naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(p, "no such file; pass the JSONL prompts with --dataset-path")
    prompts: list[str] = []
    ids: list[str] = []
    outs: list[int | None] = []
    with p.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"line {line}"
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise DatasetError(p, f"{where}: not valid JSON ({e})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) \
                    or not rec["prompt"].strip():
                raise DatasetError(p, f"{where}: expected {{\"prompt\": non-empty string, "
                                   "\"output_len\"?: int}")
            ol = rec.get("output_len")
            if ol is not None and (isinstance(ol, bool) or not isinstance(ol, int) or ol < 1):
                raise DatasetError(p, f"{where}: 'output_len' must be an integer >= 1, got {ol!r}")
            prompts.append(rec["prompt"])
            ids.append(str(rec.get("id", line)))
            outs.append(ol)
    if not prompts:
        raise DatasetError(p, "no prompts (empty file)")
    return DatasetItems(name="jsonl", source=str(p), prompts=prompts, item_ids=ids,
                        references=[None] * len(prompts), output_lens=outs)
