"""What the fault proxy does to traffic: faults per request and network impairment. Pure, no I/O.

Faults (one kind per proxy; a request gets it when its seeded draw is below ``rate``, so the
same seed and request order fault the same requests). They act on the response, at its
*trigger point*: right after the response head (``\\r\\n\\r\\n``) and ``after_events``
complete SSE events (``\\n\\n``) of the body; ``delay_headers`` acts before its first byte.

    delay_headers  hold the whole response for ``delay_s`` (the head arrives that late)
    stall          forward up to the trigger, then nothing for ``delay_s``, then the rest
    reset          forward up to the trigger, then reset both connections (TCP RST)
    truncate       forward up to the trigger and TRUNCATE_EXTRA more bytes (cutting into the
                   chunked framing), then close the client connection cleanly (FIN)

A response that ends before its trigger point is forwarded whole (the fault did not happen).

Impairment (every response byte, as ``tc netem`` would on the link): each read from either
side is delivered ``latency_s + jitter_s * z`` later (z standard normal, the delay clipped at
0), never before the read before it (no reordering); with probability ``stall_prob`` a read
from the server is held ``stall_s`` more, and everything behind it waits (a packet-level
stall: what arrives meanwhile is delivered at once after it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

FAULT_KINDS = ("none", "delay_headers", "stall", "reset", "truncate")
TRUNCATE_EXTRA = 3
HEAD_END = b"\r\n\r\n"
EVENT_END = b"\n\n"


@dataclass(frozen=True)
class ProxyPolicy:
    fault: str = "none"
    rate: float = 1.0  # fraction of requests that get the fault
    after_events: int = 2  # SSE events forwarded before a mid-stream fault
    delay_s: float = 1.0  # delay_headers / stall length
    latency_s: float = 0.0  # one-way added delay, both directions
    jitter_s: float = 0.0  # standard deviation of the added delay
    stall_prob: float = 0.0  # per read from the server
    stall_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fault not in FAULT_KINDS:
            raise ValueError(f"fault must be one of {', '.join(FAULT_KINDS)}, got {self.fault!r}")
        for name in ("rate", "stall_prob"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")
        for name in ("delay_s", "latency_s", "jitter_s", "stall_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {v!r}")
        if not (isinstance(self.after_events, int) and self.after_events >= 0):
            raise ValueError(f"after_events must be an int >= 0, got {self.after_events!r}")

    def as_dict(self) -> dict:
        return asdict(self)


class Draws:
    """The policy's seeded random choices, in the order they are asked for."""

    def __init__(self, policy: ProxyPolicy) -> None:
        self.p = policy
        self._faults = np.random.default_rng([policy.seed, 1])
        self._delays = np.random.default_rng([policy.seed, 2])

    def fault_for_next_request(self) -> str | None:
        if self.p.fault == "none":
            return None
        return self.p.fault if self._faults.random() < self.p.rate else None

    def delay(self, from_server: bool) -> float:
        """Added delay of one read (seconds)."""
        p = self.p
        d = p.latency_s
        if p.jitter_s > 0:
            d = max(0.0, d + p.jitter_s * float(self._delays.standard_normal()))
        if from_server and p.stall_prob > 0 and self._delays.random() < p.stall_prob:
            d += p.stall_s
        return d


class TriggerScanner:
    """Finds a response's trigger point (module docstring) as its bytes go by.

    ``feed(data)`` returns the offset in ``data`` at which the trigger is reached (the bytes
    before it come before the fault), or None if it is not reached within ``data``. Patterns
    split across reads are found (the last bytes of the previous read are kept).
    """

    def __init__(self, after_events: int) -> None:
        self.after_events = after_events
        self.head_done = False
        self.events = 0
        self._tail = b""
        self.fired = False

    def feed(self, data: bytes) -> int | None:
        if self.fired:
            return None
        buf = self._tail + data
        base = len(self._tail)  # offset of data[0] in buf
        pos = 0
        if not self.head_done:
            i = buf.find(HEAD_END)
            if i < 0:
                self._tail = buf[-(len(HEAD_END) - 1):]
                return None
            self.head_done = True
            pos = i + len(HEAD_END)
            if self.after_events == 0:
                self.fired = True
                return max(0, pos - base)
        while True:
            i = buf.find(EVENT_END, pos)
            if i < 0:
                break
            self.events += 1
            pos = i + len(EVENT_END)
            if self.events >= self.after_events:
                self.fired = True
                return max(0, pos - base)
        self._tail = buf[-(len(EVENT_END) - 1):] if pos < len(buf) else b""
        return None
