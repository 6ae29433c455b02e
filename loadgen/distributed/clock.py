"""Clock offsets between the driver and a remote worker, and the common start on each clock.

Each round the driver reads its wall clock (``ta``), asks the worker for its wall clock
(``tw``) and reads its own again (``tb``). If the request and the answer took equally long,
the worker read its clock at the driver's (ta + tb) / 2, so

    offset = tw - (ta + tb) / 2        (worker clock - driver clock)

with an error of at most rtt / 2 (rtt = tb - ta) whatever the asymmetry. The round with the
smallest rtt bounds the error best and is kept (Cristian's algorithm, as NTP's clock filter).

The common start is chosen on the driver's clock, ``start = now + margin``, and each worker
waits for ``start + offset`` on its own wall clock, which it converts once to its monotonic
clock (perf_counter) so that the run itself is timed monotonically. Every worker's records
are times from its own t0; between workers they are comparable to within the offset's error
(reported per worker in the manifest).
"""

from __future__ import annotations

from collections.abc import Sequence


def best_offset(samples: Sequence[tuple[float, float, float]]) -> dict[str, float]:
    """{offset_s, rtt_s, error_bound_s} from rounds of (ta, tw, tb); see the module doc."""
    if not samples:
        raise ValueError("best_offset needs at least one (ta, tw, tb) round")
    ta, tw, tb = min(samples, key=lambda s: s[2] - s[0])
    rtt = tb - ta
    if rtt < 0:
        raise ValueError(f"round trip ends before it starts (ta={ta}, tb={tb}): the driver's "
                         "wall clock stepped during the measurement; run again")
    return {"offset_s": tw - (ta + tb) / 2, "rtt_s": rtt, "error_bound_s": rtt / 2,
            "rounds": len(samples)}


def start_margin(rtts: Sequence[float], floor_s: float) -> float:
    """Lead time of the common start: long enough for the start message to reach every worker
    (20 round trips of the slowest one) and never below ``floor_s``."""
    return max(floor_s, 20.0 * max(rtts, default=0.0))
