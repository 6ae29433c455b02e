"""Bounds on a workload before it is built: absurd flags get a clear error, never a hang or OOM.

A workload is built in memory before t0 (every prompt and request body), so its size is known
up front. ``check_build`` refuses one whose estimated memory exceeds MEMORY_FRACTION of the
memory available now:

    bytes ~= n * (PER_REQUEST_BYTES + BYTES_PER_PROMPT_TOKEN * mean input tokens)

(the prompt text and its JSON-encoded request body, about 6 bytes per token each, and the
per-request arrays and objects). ``check_duration`` refuses a schedule longer than
MAX_DURATION_S (30 days): a rate of 1e-300 would otherwise make a run that never ends.
"""

from __future__ import annotations

import math

MAX_DURATION_S = 30 * 86400.0
PER_REQUEST_BYTES = 1024
BYTES_PER_PROMPT_TOKEN = 12
MEMORY_FRACTION = 0.5


class WorkloadTooLarge(ValueError):
    """The flags describe a workload this machine cannot hold or a run that would not end."""


def available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def workload_bytes(n: float, mean_input_tokens: float) -> float:
    return n * (PER_REQUEST_BYTES + BYTES_PER_PROMPT_TOKEN * max(0.0, mean_input_tokens))


def check_build(n: float, mean_input_tokens: float, what: str,
                available: int | None = None) -> None:
    """Raise ``WorkloadTooLarge`` if ``n`` requests of this size would not fit in memory."""
    if not math.isfinite(n) or n < 0:
        raise WorkloadTooLarge(f"{what}: {n!r} requests is not a usable count")
    need = workload_bytes(n, mean_input_tokens)
    have = available_bytes() if available is None else available
    if need > MEMORY_FRACTION * have:
        raise WorkloadTooLarge(
            f"{what}: {n:.4g} requests of ~{mean_input_tokens:.0f} prompt tokens would take "
            f"about {need / 2**30:.3g} GiB of memory before the run (the machine has "
            f"{have / 2**30:.3g} GiB available); lower the count or the lengths, or split the "
            "load over several runs")


def check_duration(duration_s: float, what: str) -> None:
    """Raise ``WorkloadTooLarge`` if the schedule lasts longer than MAX_DURATION_S."""
    if not math.isfinite(duration_s) or duration_s > MAX_DURATION_S:
        raise WorkloadTooLarge(
            f"{what}: the schedule would last {duration_s:.4g} s (more than "
            f"{MAX_DURATION_S / 86400:g} days); is the rate (or the trace speed-up) right?")
