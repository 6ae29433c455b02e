"""arrivals/: WHEN and HOW BIG.

Arrival processes (intended send times), request-length distributions and prompts, combined
into a :class:`~arrivals.workload.Workload` that the load generator replays open-loop; trace
readers (:mod:`arrivals.traces`) with declared transforms (:mod:`arrivals.transforms`), and
plans (:mod:`arrivals.plan`) that save a workload for exact replay, and multi-turn sessions
(:mod:`arrivals.sessions`, :mod:`arrivals.conversations`, think times in :mod:`arrivals.think`).
"""

from arrivals.plan import PlanError, read_plan, write_plan
from arrivals.processes import constant_schedule, gamma_schedule, poisson_schedule, schedule
from arrivals.renewal import weibull_schedule, weibull_shape_from_cv
from arrivals.sessions import Sessions
from arrivals.superposition import superpose
from arrivals.think import ThinkTime, parse_think_time
from arrivals.thinning import ramp, sine, steps, thinned_schedule
from arrivals.trace_workload import trace_workload
from arrivals.workload import Workload, synthetic_workload

__all__ = [
    "PlanError",
    "Sessions",
    "ThinkTime",
    "Workload",
    "constant_schedule",
    "gamma_schedule",
    "parse_think_time",
    "poisson_schedule",
    "ramp",
    "read_plan",
    "schedule",
    "sine",
    "steps",
    "superpose",
    "synthetic_workload",
    "thinned_schedule",
    "trace_workload",
    "weibull_schedule",
    "weibull_shape_from_cv",
    "write_plan",
]
