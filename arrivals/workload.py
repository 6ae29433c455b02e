"""The Workload: for each request i, when to send it and what to send.

A workload is plain data computed before the run (seeded): the run replays it open-loop,
so the schedule never depends on how the server behaves. A workload may carry multi-turn
session structure (:mod:`arrivals.sessions`): then only first turns have an intended time
before the run, and each later turn is sent a think time after its previous turn ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arrivals.lengths import uniform_lengths
from arrivals.processes import schedule
from arrivals.prompts import word_prompts
from arrivals.sessions import Sessions


@dataclass(frozen=True)
class Workload:
    """Requests to send. Arrays are indexed by request id (0..n-1)."""

    t_intended: np.ndarray  # float64 seconds from t0, non-decreasing (NaN: a later turn)
    prompts: list[str]
    input_tokens: np.ndarray  # int64: expected prompt tokens (from the dataset/generator)
    output_tokens: np.ndarray  # int64: output tokens asked for (max_tokens)
    dataset: str = "random"
    item_ids: list[str] | None = None
    description: dict[str, Any] = field(default_factory=dict)
    sessions: Sessions | None = None  # multi-turn structure (arrivals/sessions.py)

    def __post_init__(self) -> None:
        n = len(self.t_intended)
        for name in ("prompts", "input_tokens", "output_tokens"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"workload {name} has {len(getattr(self, name))} rows, expected {n}")
        if self.item_ids is not None and len(self.item_ids) != n:
            raise ValueError(f"workload item_ids has {len(self.item_ids)} rows, expected {n}")
        t = np.asarray(self.t_intended)
        if self.sessions is not None:
            self.sessions.validate(t)
        elif n and (not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0) or t[0] < 0):
            raise ValueError("workload t_intended must be finite, >= 0 and non-decreasing")

    def __len__(self) -> int:
        return len(self.t_intended)

    @property
    def duration(self) -> float:
        """Intended time of the last scheduled request (with sessions: the last first turn)."""
        if not len(self):
            return 0.0
        if self.sessions is not None:
            return float(self.t_intended[self.sessions.first[-1]])
        return float(self.t_intended[-1])

    def head(self, n: int) -> Workload:
        """The first ``n`` requests, or with sessions the first ``n`` sessions (all turns)."""
        if self.sessions is None:
            if n >= len(self):
                return self
            idx = np.arange(n)
        else:
            if n >= self.sessions.n_sessions:
                return self
            idx = np.flatnonzero(self.sessions.session_index() < n)
        il = idx.tolist()
        return Workload(
            t_intended=self.t_intended[idx], prompts=[self.prompts[i] for i in il],
            input_tokens=self.input_tokens[idx], output_tokens=self.output_tokens[idx],
            dataset=self.dataset,
            item_ids=None if self.item_ids is None else [self.item_ids[i] for i in il],
            description=self.description,
            sessions=None if self.sessions is None else self.sessions.take(idx),
        )


def synthetic_workload(
    *,
    num_requests: int,
    request_rate: float,
    process: str = "poisson",
    burstiness: float = 1.0,
    input_len: int = 128,
    output_len: int = 64,
    range_ratio: float = 0.0,
    seed: int = 0,
) -> Workload:
    """Random word prompts with uniform lengths, sent by the given arrival process.

    Independent seeded streams are used for the schedule, the lengths and the text, so that
    changing the rate does not change which prompts are sent.
    """
    ss = np.random.SeedSequence(seed)
    s_len, s_text = (np.random.default_rng(s) for s in ss.spawn(2))
    t = schedule(process, request_rate, num_requests, burstiness=burstiness, seed=seed)
    inp = uniform_lengths(input_len, range_ratio, num_requests, s_len)
    out = uniform_lengths(output_len, range_ratio, num_requests, s_len)
    prompts = word_prompts(inp, s_text)
    return Workload(
        t_intended=t,
        prompts=prompts,
        input_tokens=inp,
        output_tokens=out,
        dataset="random",
        description={
            "kind": "synthetic",
            "process": process,
            "request_rate": request_rate,
            "burstiness": burstiness,
            "num_requests": num_requests,
            "input_len": input_len,
            "output_len": output_len,
            "range_ratio": range_ratio,
            "seed": seed,
            "prompt_text": "random common English words, ~1 token each (exact on the sim)",
        },
    )
