"""The schema of an experiment file (docs/experiments.md), as pydantic models.

Every table forbids unknown keys (a typo is an error, never a silently ignored setting), and
every value is checked for type and range here; cross references (an axis naming a model that
is not defined, an exclusion naming a value that is not on its axis) are checked in
``loadgen.matrix.spec``. pydantic reports each problem with its key path ("loc"), which
``loadgen.matrix.locate`` turns into a line of the file.

The workload keys mirror ``loadgen run``'s workload flags (``dataset`` is --dataset-name,
``path`` --dataset-path, ``arrival`` --arrival ...), so a cell is exactly a ``loadgen sweep``
command line, and the matrix builds its workloads with the same code.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
AXES = ("runtime", "model", "batch_size", "tp", "pp", "workload", "repetition")
# What an exclusion or override may match on: the axes, plus values derived from them.
MATCH_KEYS = (*AXES, "gpus", "params_b")
SLO_RE = re.compile(r"^(ttft|itl|tpot|e2e|norm)_p(\d+(?:\.\d+)?)_ms$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _name(v: str, what: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(f"{what} {v!r} must be letters, digits, '.', '_' or '-' (no spaces), "
                         "starting with a letter or digit")
    return v


MAX_REPETITIONS = 1000  # more is a typo, not an experiment (and would not fit in memory)
MAX_CELLS = 100_000  # cells before exclusions; checked in spec.cross_check


class ExperimentMeta(Strict):
    name: str
    description: str = ""
    store: str = "results/store"
    repetitions: int = Field(1, ge=1, le=MAX_REPETITIONS)
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return _name(v, "experiment name")


class Parallel(Strict):
    tp: int = Field(1, ge=1, description="tensor-parallel size")
    pp: int = Field(1, ge=1, description="pipeline-parallel size")


class Axes(Strict):
    runtimes: list[str] = Field(min_length=1)
    models: list[str] = Field(min_length=1)
    batch_sizes: list[int] = Field(min_length=1)
    workloads: list[str] = Field(min_length=1)
    parallelism: list[Parallel] = Field(default_factory=lambda: [Parallel()], min_length=1)

    @field_validator("runtimes", "models", "workloads")
    @classmethod
    def _unique_names(cls, v: list[str]) -> list[str]:
        for x in v:
            _name(x, "axis value")
        if len(set(v)) != len(v):
            raise ValueError(f"values must be unique, got {v}")
        return v

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v) or len(set(v)) != len(v):
            raise ValueError(f"batch sizes must be unique whole numbers >= 1, got {v}")
        return v

    @field_validator("parallelism")
    @classmethod
    def _par(cls, v: list[Parallel]) -> list[Parallel]:
        if len({(p.tp, p.pp) for p in v}) != len(v):
            raise ValueError("parallelism entries must be unique (tp, pp) pairs")
        return v


class Client(Strict):
    """Request options of the OpenAI client (``loadgen run``'s endpoint flags)."""

    endpoint: Literal["/v1/completions", "/v1/chat/completions"] | None = None
    stream: bool | None = None
    include_usage: bool | None = None
    ignore_eos: bool | None = None
    timeout_s: float | None = Field(None, gt=0)
    headers: dict[str, str] | None = None
    extra_body: dict[str, Any] | None = None
    api_key_env: str | None = Field(None, description="name of the environment variable that "
                                    "holds the API key (never the key itself)")


class Load(Strict):
    """Offered load per cell: a list of rates, or ``"auto"`` (probe, then fractions of it)."""

    rates: list[float] | Literal["auto"] = "auto"
    num_prompts: int | None = Field(None, ge=1)
    duration_per_rate_s: float = Field(20.0, gt=0)
    auto_fractions: list[float] = Field(
        default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1], min_length=1)
    probe_requests: int = Field(128, ge=4)
    probe_rate: float | None = Field(None, gt=0)
    stop_when_saturated: bool = True
    max_error_fraction: float = Field(0.05, ge=0, le=1)
    min_throughput_ratio: float = Field(0.85, gt=0, le=1)
    max_latency_growth: float = Field(2.0, gt=1)
    max_send_lag_ms: float = Field(5.0, gt=0)

    @field_validator("rates", mode="before")
    @classmethod
    def _rates(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v != "auto":
                raise ValueError(f"rates must be a list of request rates or \"auto\", got {v!r}")
            return v
        if not isinstance(v, list) or not v:
            raise ValueError("rates must be a non-empty list of request rates (req/s) or \"auto\"")
        for r in v:
            if isinstance(r, bool) or not isinstance(r, int | float) or not (r > 0) \
                    or math.isinf(r):
                raise ValueError(f"each rate must be a finite number > 0 (req/s), got {r!r}")
        return sorted({float(r) for r in v})

    @field_validator("auto_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not (f > 0) or math.isinf(f) for f in v):
            raise ValueError(f"fractions must be finite numbers > 0, got {v}")
        return sorted(set(v))


class TraceTransforms(Strict):
    """``loadgen run``'s --trace-filter/--trace-window/--trace-speedup (the rate is the load)."""

    filter: list[str] = Field(default_factory=list)
    window: str | None = None
    speedup: float | None = Field(None, gt=0)
    keep_failed: bool = False

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^\s*[0-9.eE+-]*\s*:\s*[0-9.eE+-]*\s*$", v):
            raise ValueError(f"window must be \"START:END\" in seconds, got {v!r}")
        return v


class Workload(Strict):
    """One workload: prompts (a dataset or synthetic), an arrival process or a trace."""

    description: str = ""
    dataset: Literal["random", "sharegpt", "alpaca", "hf", "jsonl"] = "random"
    path: str | None = None
    multi_turn: bool = False
    hf_split: str = "train"
    hf_columns: str | None = None
    input_len: int = Field(1024, ge=1, description="random: prompt tokens")
    output_len: int | None = Field(None, ge=1, description="fixed max_tokens of every request")
    random_output_len: int = Field(128, ge=1, description="random: max_tokens")
    range_ratio: float = Field(0.0, ge=0, lt=1)
    arrival: Literal["poisson", "gamma", "constant"] | None = None
    burstiness: float = Field(1.0, gt=0)
    trace: str | None = None
    trace_format: Literal["burstgpt", "azure", "mooncake", "csv", "jsonl"] | None = None
    trace_columns: str | None = None
    trace_time_unit: Literal["s", "ms", "us", "ns", "iso"] = "s"
    transforms: TraceTransforms | None = None
    from_fit: str | None = None
    length_scale: float = Field(1.0, gt=0)
    tokenizer: str | None = None
    prompt_tokens_from: Literal["tokenizer", "server", "words"] | None = None
    seed: int | None = None
    client: Client | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Workload:
        if self.dataset != "random" and not self.path:
            raise ValueError(f"dataset {self.dataset!r} needs path = \"FILE\"")
        if self.trace and self.dataset != "random":
            raise ValueError("trace and dataset are exclusive: a trace brings its own requests")
        if self.trace and not self.trace_format:
            raise ValueError("trace needs trace_format (burstgpt, azure, mooncake, csv, jsonl)")
        if self.transforms is not None and not self.trace:
            raise ValueError("transforms apply to a trace; this workload has no trace")
        if self.from_fit and (self.trace or self.dataset != "random"):
            raise ValueError("from_fit brings its own requests: no trace or dataset with it")
        return self


class Model(Strict):
    """A model: ``source`` for every runtime, ``sources.<runtime>`` where a runtime needs
    another form (a GGUF file for llama.cpp). ``loadgen-tiny:gguf``, ``loadgen-tiny:hf``,
    ``loadgen-small:gguf`` and ``loadgen-small:hf`` are made locally (servers/models)."""

    description: str = ""
    source: str | None = None
    sources: dict[str, str] = Field(default_factory=dict)
    served_model_name: str | None = None
    params_b: float | None = Field(None, gt=0, description="parameters in billions (matching)")


class RuntimeSettings(Strict):
    """How one runtime is started: options of its factory (servers/registry.py), extra server
    flags, client options, timeouts."""

    options: dict[str, Any] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list)
    client: Client | None = None
    prepare: bool = False
    startup_timeout_s: float = Field(600.0, gt=0)
    startup_estimate_s: float | None = Field(None, ge=0)
    profile: Literal["perf", "nsys"] | None = Field(
        None, description="run each cell's server under this profiler; its trace files go "
        "into the cell's run directories (docs/experiments.md)")


class Report(Strict):
    heatmap: list[str] = Field(default_factory=lambda: ["batch_size", "runtime"])
    overlay: str = "runtime"
    fits: bool = True

    @field_validator("heatmap")
    @classmethod
    def _heat(cls, v: list[str]) -> list[str]:
        if len(v) != 2 or len(set(v)) != 2 or any(a not in AXES for a in v):
            raise ValueError(f"heatmap must name two different axes of {', '.join(AXES)}, "
                             f"got {v}")
        return v

    @field_validator("overlay")
    @classmethod
    def _overlay(cls, v: str) -> str:
        if v not in AXES:
            raise ValueError(f"overlay must be one of {', '.join(AXES)}, got {v!r}")
        return v


def slo_problem(key: str, threshold: Any) -> str | None:
    """Why ``key = threshold`` is not a valid SLO entry, or None."""
    m = SLO_RE.match(key)
    if not m or not (0 < float(m.group(2)) < 100):
        return (f"unknown SLO key {key!r}: expected <metric>_p<P>_ms with metric ttft, itl, "
                "tpot, e2e or norm and 0 < P < 100, e.g. ttft_p99_ms")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
            or not (threshold > 0) or math.isinf(threshold):
        return f"the threshold must be a positive number of ms, got {threshold!r}"
    return None


def _check_match(v: dict[str, Any]) -> dict[str, Any]:
    for k, cond in v.items():
        if k not in MATCH_KEYS:
            raise ValueError(f"cannot match on {k!r}; keys: {', '.join(MATCH_KEYS)}")
        if isinstance(cond, dict):
            bad = set(cond) - {"lt", "le", "gt", "ge", "ne"}
            if bad or not cond:
                raise ValueError(f"{k}: a comparison table takes lt, le, gt, ge or ne, got "
                                 f"{sorted(cond) or 'nothing'}")
            for op, x in cond.items():
                if op != "ne" and (isinstance(x, bool) or not isinstance(x, int | float)):
                    raise ValueError(f"{k}.{op} needs a number, got {x!r}")
        elif isinstance(cond, list):
            if not cond:
                raise ValueError(f"{k}: an empty list matches nothing")
        elif not isinstance(cond, str | int | float):
            raise ValueError(f"{k}: expected a value, a list of values or a comparison table")
    return v


class Exclude(Strict):
    """Cells to leave out: every key given must match (a value, any of a list, or a
    comparison table such as ``{ gt = 100 }``)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _keys(self) -> Exclude:
        extra = dict(self.model_extra or {})
        if not extra:
            raise ValueError("an exclusion needs at least one axis to match, e.g. "
                             "runtime = \"pytorch\"")
        _check_match(extra)
        return self

    @property
    def match(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Override(Strict):
    """Settings for the cells that ``match``: tables are merged key by key over the defaults
    (``flags`` are appended), in file order."""

    match: dict[str, Any]
    load: dict[str, Any] | None = None
    slo: dict[str, Any] | None = None
    workload: dict[str, Any] | None = None
    client: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    flags: list[str] | None = None
    startup_timeout_s: float | None = Field(None, gt=0)
    profile: Literal["perf", "nsys"] | None = None

    @field_validator("match")
    @classmethod
    def _m(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("match needs at least one axis, e.g. { runtime = \"llamacpp\" }")
        return _check_match(v)


class ExperimentFile(Strict):
    experiment: ExperimentMeta
    axes: Axes
    load: Load = Field(default_factory=Load)
    slo: dict[str, Any] = Field(default_factory=dict)  # keys checked in spec.cross_check
    client: Client = Field(default_factory=Client)
    report: Report = Field(default_factory=Report)
    models: dict[str, Model] = Field(default_factory=dict)
    workloads: dict[str, Workload] = Field(default_factory=dict)
    runtimes: dict[str, RuntimeSettings] = Field(default_factory=dict)
    exclude: list[Exclude] = Field(default_factory=list)
    override: list[Override] = Field(default_factory=list)
