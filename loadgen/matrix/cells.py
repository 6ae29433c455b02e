"""Expanding an experiment into cells (pure: no I/O, no processes).

A cell is one point of {runtimes} x {models} x {parallelism} x {batch sizes} x {workloads} x
{repetitions}: one server configuration driven by one workload over the load axis (a list of
rates, or an automatic sweep), i.e. one ``loadgen sweep``. Its capacity at the SLO (the knee)
is one number of the matrix.

Order: runtime, model, parallelism, batch size (the server configuration), then workload and
repetition, so the cells that share a server are neighbours and the server starts once.

Exclusions (``[[exclude]]``) drop cells whose axes all match (a value, any of a list, or a
comparison such as ``{ gt = 100 }`` on numbers); the derived keys ``gpus`` (tp x pp) and
``params_b`` (the model's) can be matched too. Overrides (``[[override]]``) then change the
settings of the cells they match, in file order: tables (load, slo, workload, client, options)
are merged key by key, ``flags`` are appended.

The cell id is the first 16 hex digits of the SHA-256 of the cell's full configuration in
canonical JSON (sorted keys): runtime, its options and flags, the model's source and served
name, batch size, parallelism, the profiler when one is set (a profiled server is a different
measurement), the workload (with defaults), the load, the client options and the repetition. It leaves out what does not change the measurement (the SLO, the report, names
and descriptions, the startup timeout), so an SLO can be tightened and the report rebuilt
without re-running anything, and the same cell in two experiment files is one cell.
"""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadgen.matrix.schema import Client, ExperimentFile, Load, Workload
from loadgen.matrix.spec import Experiment, KeyPath

CELL_CONFIG_VERSION = 1
DEFAULT_SOURCE_RUNTIMES = ("sim",)  # runtimes that serve any name: the model key is enough


@dataclass(frozen=True)
class Cell:
    axes: dict[str, Any]  # runtime, model, batch_size, tp, pp, workload, repetition
    config: dict[str, Any]  # what the id hashes (module docstring)
    slo: dict[str, float]
    startup_timeout_s: float
    startup_estimate_s: float | None
    prepare: bool
    skip: str | None = None  # set when the cell cannot run as configured (e.g. no model source)
    id: str = field(default="")
    server_key: str = field(default="")

    @property
    def label(self) -> str:
        a = self.axes
        par = f"tp{a['tp']}" + (f"pp{a['pp']}" if a["pp"] != 1 else "")
        return (f"{a['runtime']}/{a['model']}/b{a['batch_size']}/{par}/{a['workload']}"
                f"/r{a['repetition']}")

    @property
    def load(self) -> Load:
        return Load.model_validate(self.config["load"])

    @property
    def workload(self) -> Workload:
        return Workload.model_validate(self.config["workload"])

    @property
    def client(self) -> Client:
        return Client.model_validate(self.config["client"])


@dataclass(frozen=True)
class Excluded:
    axes: dict[str, Any]
    reason: str
    rule: int  # index of the [[exclude]] table

    @property
    def label(self) -> str:
        a = self.axes
        return (f"{a['runtime']}/{a['model']}/b{a['batch_size']}/tp{a['tp']}"
                + (f"pp{a['pp']}" if a["pp"] != 1 else "") + f"/{a['workload']}/r{a['repetition']}")


@dataclass(frozen=True)
class Expansion:
    cells: list[Cell]
    excluded: list[Excluded]

    def groups(self) -> list[list[Cell]]:
        """Cells by server configuration, in first-appearance order."""
        by: dict[str, list[Cell]] = {}
        for c in self.cells:
            by.setdefault(c.server_key, []).append(c)
        return list(by.values())


def canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()[:n]


_OPS = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
        "ne": operator.ne}


def matches(match: dict[str, Any], values: dict[str, Any]) -> bool:
    """Every key of ``match`` holds for ``values`` (module docstring); a comparison against a
    missing value (e.g. params_b of a model that gives none) does not hold."""
    for k, cond in match.items():
        v = values.get(k)
        if isinstance(cond, dict):
            if v is None or not all(_OPS[op](v, x) for op, x in cond.items()):
                return False
        elif isinstance(cond, list):
            if v not in cond:
                return False
        elif v != cond:
            return False
    return True


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Tables merged key by key (recursively); other values replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _client(*parts: Client | dict | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in parts:
        if p is None:
            continue
        d = p if isinstance(p, dict) else p.model_dump(exclude_none=True)
        out = merge(out, d)
    return out


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_drop_none(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}


def expand(exp: Experiment) -> Expansion:
    """All cells of ``exp`` (module docstring); ExperimentError if an override makes a table
    invalid (named by the override's key and line)."""
    s: ExperimentFile = exp.spec
    cells: list[Cell] = []
    excluded: list[Excluded] = []
    problems: list[tuple[KeyPath, str]] = []
    for runtime in s.axes.runtimes:
        rs = s.runtimes.get(runtime)
        for model_name in s.axes.models:
            model = s.models[model_name]
            for par in s.axes.parallelism:
                for batch in s.axes.batch_sizes:
                    for wname in s.axes.workloads:
                        for rep in range(s.experiment.repetitions):
                            axes = {"runtime": runtime, "model": model_name, "batch_size": batch,
                                    "tp": par.tp, "pp": par.pp, "workload": wname,
                                    "repetition": rep}
                            values = {**axes, "gpus": par.tp * par.pp, "params_b": model.params_b}
                            rule = next((i for i, ex in enumerate(s.exclude)
                                         if matches(ex.match, values)), None)
                            if rule is not None:
                                excluded.append(Excluded(axes, s.exclude[rule].reason, rule))
                                continue
                            cell = _build(exp, axes, values, rs, problems)
                            if cell is not None:
                                cells.append(cell)
    if problems:
        raise exp.error(problems)
    return Expansion(cells, excluded)


def _build(exp: Experiment, axes: dict, values: dict, rs, problems: list) -> Cell | None:
    from pydantic import ValidationError

    from loadgen.matrix.spec import _pydantic_problems

    s = exp.spec
    runtime, model_name, wname = axes["runtime"], axes["model"], axes["workload"]
    model = s.models[model_name]
    load = s.load.model_dump()
    slo = dict(s.slo)
    wl = s.workloads[wname].model_dump(exclude={"client", "description"})
    wl_client = s.workloads[wname].client
    client = _client(s.client, rs.client if rs else None, wl_client)
    options = dict(rs.options) if rs else {}
    flags = list(rs.flags) if rs else []
    startup = rs.startup_timeout_s if rs else 600.0
    profile = rs.profile if rs else None
    src_load: KeyPath = ("load",)
    src_wl: KeyPath = ("workloads", wname)
    src_client: KeyPath = ("client",)
    for i, ov in enumerate(s.override):
        if not matches(ov.match, values):
            continue
        if ov.load is not None:
            load, src_load = merge(load, ov.load), ("override", i, "load")
        if ov.slo is not None:
            slo = {**slo, **ov.slo}
        if ov.workload is not None:
            wl, src_wl = merge(wl, ov.workload), ("override", i, "workload")
        if ov.client is not None:
            client, src_client = merge(client, ov.client), ("override", i, "client")
        if ov.options is not None:
            options = {**options, **ov.options}
        if ov.flags is not None:
            flags = flags + list(ov.flags)
        if ov.startup_timeout_s is not None:
            startup = ov.startup_timeout_s
        if ov.profile is not None:
            profile = ov.profile
    ok = True
    for src, cls, data in ((src_load, Load, load), (src_wl, Workload, wl), (src_client, Client, client)):
        try:
            cls.model_validate(data)
        except ValidationError as e:
            ok = False
            for loc, msg in _pydantic_problems(e):
                item = ((*src, *loc), msg)
                if item not in problems:
                    problems.append(item)
    if not ok:
        return None
    wl = Workload.model_validate(wl).model_dump(exclude={"client", "description"})
    load = Load.model_validate(load).model_dump()
    if wl.get("seed") is None:
        wl["seed"] = s.experiment.seed
    source = model.sources.get(runtime) or model.source
    skip = None
    if source is None:
        if runtime in DEFAULT_SOURCE_RUNTIMES:
            source = model_name
        else:
            skip = (f"model {model_name!r} has no source for runtime {runtime!r}: give "
                    f"[models.{model_name}] source = ... or sources.{runtime} = ...")
    server = {
        "runtime": runtime, "options": options, "flags": flags,
        "model": {"source": source, "served_model_name": model.served_model_name or model_name},
        "batch_size": axes["batch_size"], "tp": axes["tp"], "pp": axes["pp"],
    }
    if profile is not None:  # only when set: the ids of cells without a profiler stay as they were
        server["profile"] = profile
    config = {
        "version": CELL_CONFIG_VERSION, "server": server, "workload": _drop_none(wl),
        "load": load, "client": client, "repetition": axes["repetition"],
    }
    cell = Cell(axes=axes, config=config, slo=slo, startup_timeout_s=startup,
                startup_estimate_s=rs.startup_estimate_s if rs else None,
                prepare=rs.prepare if rs else False, skip=skip)
    object.__setattr__(cell, "id", digest(config))
    object.__setattr__(cell, "server_key", digest(server))
    return cell
