"""How long cells take, roughly, before running them (pure).

Per server configuration: its start-up (``startup_estimate_s`` of the runtime's table, else a
default per runtime below), once per cell when the server is profiled. Per cell and rate: the load itself, n / rate seconds for n
requests (``num_prompts``, else ``max(20, rate x duration_per_rate_s)`` as ``loadgen sweep``
chooses), plus a fixed overhead per run for the preflight, the environment manifest, the drain
of the last requests and the summary (measured 0.4-2.3 s on a loaded 2-core VM).
``rates = "auto"`` adds the saturation probe and assumes each fraction runs for
``duration_per_rate_s``. A sweep that stops early at saturation takes less: the estimate is an
upper bound for the load, a guess for everything else.
"""

from __future__ import annotations

from loadgen.matrix.cells import Cell

RUN_OVERHEAD_S = 2.0
PROBE_S = 15.0
DEFAULT_STARTUP_S = {"sim": 2.0, "llamacpp": 5.0, "llamacpp-python": 5.0, "pytorch": 20.0,
                     "vllm": 180.0, "triton": 240.0}
OTHER_STARTUP_S = 60.0


def startup_s(cell: Cell) -> float:
    if cell.startup_estimate_s is not None:
        return cell.startup_estimate_s
    return DEFAULT_STARTUP_S.get(cell.axes["runtime"], OTHER_STARTUP_S)


def cell_s(cell: Cell) -> float:
    """Seconds of load and per-run overhead of one cell (no server start)."""
    load = cell.config["load"]
    if load["rates"] == "auto":
        n_runs = len(load["auto_fractions"])
        return PROBE_S + RUN_OVERHEAD_S + n_runs * (load["duration_per_rate_s"] + RUN_OVERHEAD_S)
    total = 0.0
    for r in load["rates"]:
        n = load["num_prompts"] or max(20, int(round(r * load["duration_per_rate_s"])))
        total += n / r + RUN_OVERHEAD_S
    return total


def total_s(groups: list[list[Cell]]) -> float:
    """Seconds for cells grouped by server configuration (each group starts one server; a
    profiled group one per cell, so that each cell's trace is its own)."""
    return sum((len(g) if g[0].config["server"].get("profile") else 1) * startup_s(g[0])
               + sum(cell_s(c) for c in g) for g in groups if g)


def human(seconds: float) -> str:
    s = int(round(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 4 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"
