"""Configuration of the simulated server: one frozen, validated dataclass."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from servers.sim.model import SimCosts

FAULT_KINDS: tuple[str, ...] = ("http500", "http429", "http503", "malformed", "reset", "stall",
                                 "utf8", "giant", "endless")
"""Injectable faults; see ``servers.sim.faults`` for what the client sees for each."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything that defines a sim server; two servers with equal configs behave the same."""

    host: str = "127.0.0.1"
    port: int = 8000
    """TCP port; 0 picks a free one (the real port is printed and returned by ``start``)."""
    model: str = "sim-llm"
    """The served model name; requests naming another model get HTTP 404."""
    max_batch: int = 16
    """Most sequences running at once; later requests wait in a FIFO queue."""
    costs: SimCosts = field(default_factory=SimCosts)
    seed: int = 0
    """Seeds output text, early stops and fault choices (with the request's arrival number)."""
    eos_prob: float = 0.0
    """Probability of stopping after each token (unless ignore_eos or below min_tokens)."""
    fault_rate: float = 0.0
    """Fraction of requests, chosen deterministically from the seed, that get ``fault_kind``."""
    fault_kind: str = "http500"
    fault_stall_s: float = 30.0
    """How long a ``stall`` fault stops the stream."""
    fault_giant_bytes: int = 8 << 20
    """Size of the one token chunk of a ``giant`` fault."""
    stream_interval: int = 1
    """Tokens per streamed chunk (like vLLM's --stream-interval): the first token is sent at
    once, later ones in chunks of this many (the last chunk may hold fewer)."""

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"SimConfig.host must be a non-empty string, got {self.host!r}")
        if not _is_int(self.port) or not 0 <= self.port <= 65535:
            raise ValueError(f"SimConfig.port must be an int in [0, 65535], got {self.port!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"SimConfig.model must be a non-empty string, got {self.model!r}")
        if not _is_int(self.max_batch) or self.max_batch < 1:
            raise ValueError(f"SimConfig.max_batch must be an int >= 1, got {self.max_batch!r}")
        if not isinstance(self.costs, SimCosts):
            raise ValueError(f"SimConfig.costs must be a SimCosts, got {self.costs!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"SimConfig.seed must be an int >= 0, got {self.seed!r}")
        for name in ("eos_prob", "fault_rate"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"SimConfig.{name} must be a probability in [0, 1], got {value!r}")
        if self.fault_kind not in FAULT_KINDS:
            raise ValueError(
                f"SimConfig.fault_kind must be one of {', '.join(FAULT_KINDS)}, "
                f"got {self.fault_kind!r}"
            )
        if not _is_int(self.stream_interval) or self.stream_interval < 1:
            raise ValueError(
                f"SimConfig.stream_interval must be an int >= 1, got {self.stream_interval!r}"
            )
        if not _is_number(self.fault_stall_s) or not (
            math.isfinite(self.fault_stall_s) and self.fault_stall_s >= 0
        ):
            raise ValueError(
                f"SimConfig.fault_stall_s must be a finite number of seconds >= 0, "
                f"got {self.fault_stall_s!r}"
            )

        if not _is_int(self.fault_giant_bytes) or not 1 <= self.fault_giant_bytes <= 1 << 30:
            raise ValueError(f"SimConfig.fault_giant_bytes must be an int in [1, 2**30], "
                             f"got {self.fault_giant_bytes!r}")

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form, for /version and run manifests."""
        return asdict(self)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
