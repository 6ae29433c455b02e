"""arrivals/: WHEN and HOW BIG.

Arrival processes (intended send times), request-length distributions and prompts, combined
into a :class:`~arrivals.workload.Workload` that the load generator replays open-loop.
"""

from arrivals.processes import constant_schedule, gamma_schedule, poisson_schedule, schedule
from arrivals.workload import Workload, synthetic_workload

__all__ = [
    "Workload",
    "constant_schedule",
    "gamma_schedule",
    "poisson_schedule",
    "schedule",
    "synthetic_workload",
]
