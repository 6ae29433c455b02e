"""BurstGPT traces (HPMLL/BurstGPT): ChatGPT and GPT-4 requests served on Azure.

Two layouts, told apart by the header (columns are found by name, in any order):

- 6 columns: ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``
- 8 columns: the same plus ``Session ID`` and ``Elapsed time`` (the later releases).

``Timestamp`` is seconds from 0:00 of the first day (integers; repeats happen). A row with
``Response tokens`` = 0 is a failed request (in the data, such rows are 0,0,0); it is kept with
``ok = False`` and can be dropped with the ``filter`` transform (trace_workload drops it).
"""

from __future__ import annotations

from pathlib import Path

from arrivals.traces._csv import rows
from arrivals.traces.trace import Trace, build_trace, parse_float, parse_int

COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")
SESSION_COLUMNS = ("Session ID", "Elapsed time")


def read_burstgpt(path: str | Path) -> Trace:
    """Read a BurstGPT CSV (6- or 8-column layout) into a Trace."""
    t: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    line_no: list[int] = []
    model: list[str] = []
    log_type: list[str] = []
    session: list[str] = []
    elapsed: list[float] = []
    has_session: bool | None = None
    for line, r in rows(path, COLUMNS):
        if has_session is None:
            has_session = all(c in r for c in SESSION_COLUMNS)
        t.append(parse_float(r["Timestamp"], path, line, "Timestamp"))
        inp.append(parse_int(r["Request tokens"], path, line, "Request tokens"))
        out.append(parse_int(r["Response tokens"], path, line, "Response tokens"))
        model.append(r["Model"])
        log_type.append(r["Log Type"])
        line_no.append(line)
        if has_session:
            session.append(r["Session ID"])
            elapsed.append(parse_float(r["Elapsed time"], path, line, "Elapsed time"))
    extra: dict[str, list] = {"model": model, "log_type": log_type}
    if has_session:
        extra |= {"session_id": session, "elapsed_time": elapsed}
    ok = [o > 0 for o in out]
    return build_trace(t, inp, out, line_no, source=path, format="burstgpt", ok=ok, extra=extra)
