"""Reading an experiment file: TOML -> validated ``ExperimentFile``, or errors with key and line.

``load_experiment(path)`` parses with ``tomllib``, validates with the pydantic schema
(``loadgen.matrix.schema``) and then checks what a schema cannot: that the axes name models and
workloads that are defined, that exclusions and overrides name values that are on their axes,
and that runtime options are ones the runtime's factory takes (servers/registry.py). Every
problem is reported at once as ``FILE:LINE: key.path: message`` (the line from
``loadgen.matrix.locate``), so a user fixes a file in one pass.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.matrix.locate import key_lines, line_of
from loadgen.matrix.schema import AXES, MAX_CELLS, ExperimentFile, slo_problem

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    path: KeyPath
    message: str
    line: int | None = None

    def render(self, file: str) -> str:
        key = format_key(self.path) or "(top level)"
        where = f"{file}:{self.line}" if self.line else file
        return f"{where}: {key}: {self.message}"


class ExperimentError(ValueError):
    """The experiment file is not valid; ``problems`` name each key and line."""

    def __init__(self, file: str, problems: list[Problem]):
        self.file = file
        self.problems = problems
        head = f"{file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(head + "\n" + "\n".join("  " + p.render(file) for p in problems))


_BARE_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def format_key(path: KeyPath) -> str:
    """("exclude", 2, "model") -> "exclude[2].model"; a part that is not a bare TOML key is
    quoted, as in the file: ("models", "llama-3.1-8b") -> 'models."llama-3.1-8b"'."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
            continue
        q = p if _BARE_RE.match(p) else f'"{p}"'
        out += f".{q}" if out else q
    return out


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file with its source text (for line numbers later)."""

    path: Path
    text: str
    spec: ExperimentFile

    @property
    def name(self) -> str:
        return self.spec.experiment.name

    def line(self, path: KeyPath) -> int | None:
        return line_of(self.text, path, self._index)

    @property
    def _index(self) -> dict:
        cache = self.__dict__.get("_key_index")
        if cache is None:
            cache = key_lines(self.text)
            object.__setattr__(self, "_key_index", cache)
        return cache

    def error(self, problems: list[tuple[KeyPath, str]]) -> ExperimentError:
        return ExperimentError(str(self.path),
                               [Problem(p, m, self.line(p)) for p, m in problems])


def _unwrap(tp: Any) -> Any:
    """X | None -> X."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def allowed_keys(loc: KeyPath, root: type = ExperimentFile) -> list[str] | None:
    """The keys the table at ``loc`` accepts (for "unknown key" messages), or None."""
    from pydantic import BaseModel

    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(str(part))
            if f is None:
                return None
            tp = f.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return None


def _dotted_names(raw: Any) -> list[str]:
    """Axis values with a dot (which a bare TOML table header would split)."""
    axes = raw.get("axes") if isinstance(raw, dict) else None
    if not isinstance(axes, dict):
        return []
    lists = [axes.get(k) for k in ("models", "workloads", "runtimes")]
    return [v for vs in lists if isinstance(vs, list) for v in vs  # a non-list is its own problem
            if isinstance(v, str) and "." in v]


def _pydantic_problems(exc: Any, raw: Any = None) -> list[tuple[KeyPath, str]]:
    dotted = _dotted_names(raw)
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "extra_forbidden":
            keys = allowed_keys(loc[:-1])
            msg = "unknown key" + (f"; this table takes: {', '.join(keys)}" if keys else "")
            name = next((v for v in dotted if len(loc) >= 3 and loc[0] in ("models",
                         "workloads", "runtimes") and v.startswith(f"{loc[1]}.")), None)
            if name:
                msg += (f" (a name with dots must be quoted in TOML, or its parts become "
                        f"nested tables: [{loc[0]}.\"{name}\"])")
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
            msg += f" (got {err['input']!r})"
        out.append((loc, msg))
    return out


def parse_text(text: str, file: str = "<experiment>") -> Experiment:
    """Validate experiment ``text`` (see the module docstring); ExperimentError if invalid."""
    from pydantic import ValidationError

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # its message already says "(at line L, column C)"
        raise ExperimentError(file, [Problem((), f"not valid TOML: {e}", getattr(e, "lineno", None))]) from None
    try:
        spec = ExperimentFile.model_validate(raw)
    except ValidationError as e:
        exp = Experiment(Path(file), text, None)  # type: ignore[arg-type]
        raise exp.error(_pydantic_problems(e, raw)) from None
    exp = Experiment(Path(file), text, spec)
    problems = cross_check(spec)
    if problems:
        raise exp.error(problems)
    return exp


def load_experiment(path: str | Path) -> Experiment:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ExperimentError(str(p), [Problem((), f"cannot read the file: {e.strerror or e}")]) from None
    return parse_text(text, str(p))


def axis_values(spec: ExperimentFile) -> dict[str, list[Any]]:
    """Each axis name -> its values (as exclusions and overrides name them)."""
    a = spec.axes
    return {
        "runtime": list(a.runtimes), "model": list(a.models), "batch_size": list(a.batch_sizes),
        "tp": sorted({p.tp for p in a.parallelism}), "pp": sorted({p.pp for p in a.parallelism}),
        "workload": list(a.workloads),
        "repetition": list(range(spec.experiment.repetitions)),
    }


def _check_match_values(where: KeyPath, match: dict[str, Any], values: dict[str, list[Any]]
                        ) -> list[tuple[KeyPath, str]]:
    out = []
    for k, cond in match.items():
        if k not in AXES or isinstance(cond, dict):
            continue
        for v in cond if isinstance(cond, list) else [cond]:
            if v not in values[k]:
                axis = {"runtime": "runtimes", "model": "models", "batch_size": "batch_sizes",
                        "workload": "workloads"}.get(k, k)
                out.append(((*where, k), f"{v!r} is not a value of the {k} axis "
                            f"(axes.{axis}: {', '.join(map(str, values[k]))}); this would "
                            "match nothing"))
    return out


def cross_check(spec: ExperimentFile) -> list[tuple[KeyPath, str]]:
    """Problems a per-table schema cannot see (module docstring)."""
    from servers import registry

    out: list[tuple[KeyPath, str]] = []
    for i, m in enumerate(spec.axes.models):
        if m not in spec.models:
            out.append((("axes", "models", i), f"model {m!r} is not defined: add a "
                        f"[models.{m}] table (defined: {', '.join(spec.models) or 'none'})"))
    for i, w in enumerate(spec.axes.workloads):
        if w not in spec.workloads:
            out.append((("axes", "workloads", i), f"workload {w!r} is not defined: add a "
                        f"[workloads.{w}] table (defined: {', '.join(spec.workloads) or 'none'})"))
    for k, v in spec.slo.items():
        if (why := slo_problem(k, v)) is not None:
            out.append((("slo", k), why))
    a = spec.axes
    n_cells = (len(a.runtimes) * len(a.models) * len(a.parallelism) * len(a.batch_sizes)
               * len(a.workloads) * spec.experiment.repetitions)
    if n_cells > MAX_CELLS:
        return [*out, (("axes",), f"the axes make {n_cells:,} cells (runtimes x models x "
                       f"parallelism x batch_sizes x workloads x repetitions), more than "
                       f"{MAX_CELLS:,}: split the experiment into several files")]
    values = axis_values(spec)
    for i, ex in enumerate(spec.exclude):
        out += _check_match_values(("exclude", i), ex.match, values)
    for i, ov in enumerate(spec.override):
        out += _check_match_values(("override", i, "match"), ov.match, values)
        for k, v in (ov.slo or {}).items():
            if (why := slo_problem(k, v)) is not None:
                out.append((("override", i, "slo", k), why))
        if ov.options is not None:
            names = [r for r in spec.axes.runtimes if _matches_runtime(ov.match, r)]
            for r in names:
                for bad in registry.check_options(r, ov.options):
                    out.append((("override", i, "options", bad),
                                f"runtime {r!r} takes no option {bad!r}"))
    for r, rs in spec.runtimes.items():
        bad = registry.check_options(r, rs.options)
        for b in bad:
            allowed = registry.option_names(registry.entry(r).factory) or set()
            out.append((("runtimes", r, "options", b), f"runtime {r!r} takes no option {b!r} "
                        f"(options: {', '.join(sorted(allowed)) or 'none'})"))
    if spec.report.overlay == "repetition" and spec.experiment.repetitions == 1:
        out.append((("report", "overlay"), "overlay by repetition needs repetitions > 1"))
    return out


def _matches_runtime(match: dict[str, Any], runtime: str) -> bool:
    cond = match.get("runtime")
    if cond is None:
        return True
    return runtime in cond if isinstance(cond, list) else runtime == cond
