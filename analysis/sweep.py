"""A sweep: one endpoint, a series of request rates, one run directory per rate.

Layout (docs/report.md)::

    RESULT_DIR/sweep-<time>/
        sweep.json          the sweep's configuration, the runs, why it stopped
        probe/              (--rates auto) the saturation probe run
        rate-<R>/           one ordinary run directory per offered rate R

``--rates auto`` first measures the saturation throughput with an overload probe (a burst of
``--probe-requests`` requests, all intended at t=0 unless ``--probe-rate`` is given): while a
queue exists the server completes requests as fast as it can, so the completion rate between
the 10 % and 90 % completion quantiles estimates its maximum throughput (the first and last
10 % are the ramp-up and the drain). The sweep then runs fractions of that rate.

After each rate the sweep checks whether the server kept up (``saturation_check``) and stops
early, recording why, when it clearly did not: the higher rates would only queue forever.
"""

from __future__ import annotations

import argparse
import copy
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from scipy import stats

from analysis.load import Run, has_records, load_run
from analysis.metrics import col
from loadgen.manifest import redact_argv

DEFAULT_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1)


@dataclass(frozen=True)
class StopRules:
    """When a rate counts as saturated (or broken) and the sweep stops going higher.

    - ``max_error_fraction``: failed / recorded requests above this;
    - ``min_throughput_ratio``: achieved completion rate / offered rate below this, both measured
      the same way: (n - 1) / span, over the ok requests' t_done and all requests' t_intended;
      a server that keeps up completes requests as fast as they arrive (ratio ~ 1), a saturated
      one at its capacity (ratio = capacity / offered < 1);
    - ``max_latency_growth``: median E2E from intended of the last third of the run (by
      t_intended) over that of the first third above this, and larger with Mann-Whitney
      one-sided p < ``growth_pvalue``: the queue is growing across the run.
    Rules that need data apply only with at least ``min_requests`` ok requests.
    """

    max_error_fraction: float = 0.05
    min_throughput_ratio: float = 0.85
    max_latency_growth: float = 2.0
    growth_pvalue: float = 0.01
    min_requests: int = 12


def _span_rate(t: np.ndarray) -> float | None:
    t = np.sort(t[np.isfinite(t)])
    if t.size < 2 or t[-1] <= t[0]:
        return None
    return float((t.size - 1) / (t[-1] - t[0]))


def saturation_check(run: Run, rules: StopRules = StopRules()) -> dict[str, Any]:
    """Did the server keep up with this run's load? Numbers and the reasons it did not."""
    t = run.requests
    status = t.column("status").to_numpy(zero_copy_only=False)
    ok = status == "ok"
    t_int = col(t, "t_intended")
    t_done = col(t, "t_done")
    n, n_ok = len(status), int(ok.sum())
    counted = status != "cancelled"
    err = float((~ok & counted).sum() / max(counted.sum(), 1)) if n else 0.0
    offered = _span_rate(t_int)
    achieved = _span_rate(t_done[ok])
    ratio = achieved / offered if (offered and achieved) else None
    growth = pval = None
    if n_ok >= rules.min_requests:
        ti, e2e = t_int[ok], (t_done - t_int)[ok]
        order = np.argsort(ti, kind="stable")
        third = n_ok // 3
        first, last = e2e[order[:third]], e2e[order[-third:]]
        m0 = float(np.median(first))
        growth = float(np.median(last) / m0) if m0 > 0 else None
        pval = float(stats.mannwhitneyu(last, first, alternative="greater").pvalue)
    reasons: list[str] = []
    if n and err > rules.max_error_fraction:
        reasons.append(f"error fraction {err:.3f} > {rules.max_error_fraction:g}")
    if n_ok >= rules.min_requests and ratio is not None and ratio < rules.min_throughput_ratio:
        reasons.append(f"achieved throughput {achieved:.3g} req/s is {ratio:.2f} of the offered "
                       f"{offered:.3g} req/s (< {rules.min_throughput_ratio:g}): the server "
                       "stopped following the offered rate")
    if (growth is not None and pval is not None and growth > rules.max_latency_growth
            and pval < rules.growth_pvalue):
        reasons.append(f"E2E from intended kept rising across the run: median of the last third "
                       f"is {growth:.2f}x the first third's (> {rules.max_latency_growth:g}, "
                       f"Mann-Whitney p={pval:.2g}): the queue grows without bound")
    return {
        "n": n, "ok": n_ok, "error_fraction": err, "offered_rate": offered,
        "achieved_rate": achieved, "throughput_ratio": ratio, "latency_growth": growth,
        "latency_growth_pvalue": pval, "saturated": bool(reasons), "reasons": reasons,
    }


def saturation_throughput(t_done_ok: np.ndarray, lo: float = 0.1, hi: float = 0.9) -> float:
    """Completion rate between the ``lo`` and ``hi`` completion quantiles of an overload probe:
    (j - i) / (t_(j) - t_(i)) with i = floor(lo n), j = ceil(hi n) - 1 on the sorted t_done."""
    t = np.sort(np.asarray(t_done_ok, dtype=np.float64))
    t = t[np.isfinite(t)]
    if t.size < 4:
        raise ValueError(f"saturation probe: only {t.size} requests succeeded, need >= 4; "
                         "check the server, or raise --probe-requests")
    i, j = int(math.floor(lo * t.size)), int(math.ceil(hi * t.size)) - 1
    if t[j] <= t[i]:
        raise ValueError("saturation probe: all completions at the same instant; raise "
                         "--probe-requests")
    return float((j - i) / (t[j] - t[i]))


def parse_rates(s: str) -> list[float] | None:
    """``"2,4,8"`` -> [2.0, 4.0, 8.0] (sorted, unique); ``"auto"`` -> None."""
    from loadgen.flags import UsageError

    if s.strip().lower() == "auto":
        return None
    try:
        rates = sorted({float(x) for x in s.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"--rates must be comma-separated numbers or 'auto', got {s!r}") from None
    if not rates or any(not (r > 0) or math.isinf(r) for r in rates):
        raise UsageError(f"--rates must be positive finite request rates, got {s!r}")
    return rates


def parse_fractions(s: str) -> list[float]:
    from loadgen.flags import UsageError

    try:
        f = sorted({float(x) for x in s.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"--auto-fractions must be comma-separated numbers, got {s!r}") from None
    if not f or any(not (x > 0) or math.isinf(x) for x in f):
        raise UsageError(f"--auto-fractions must be positive numbers, got {s!r}")
    return f


def round_rate(r: float) -> float:
    """3 significant digits, so directory names stay readable (rate-37.2)."""
    return float(f"{r:.3g}")


def rate_dir_name(r: float) -> str:
    return f"rate-{r:g}"


# ---- loading a sweep -------------------------------------------------------------------------

@dataclass(frozen=True)
class Sweep:
    path: Path
    meta: dict[str, Any]
    rates: list[float]  # offered rate of each run, ascending
    runs: list[Run] = field(default_factory=list)


def is_sweep(path: str | Path) -> bool:
    return (Path(path) / "sweep.json").is_file()


def load_sweep(path: str | Path) -> Sweep:
    """Load ``sweep.json`` and every run directory it lists (skipping the probe)."""
    p = Path(path)
    if not is_sweep(p):
        raise FileNotFoundError(f"{p}: no sweep.json; is this a directory of loadgen sweep?")
    meta = orjson.loads((p / "sweep.json").read_bytes())
    items = sorted(meta.get("runs", []), key=lambda r: r["rate"])
    runs, rates = [], []
    for it in items:
        rd = p / it["run_dir"]
        if not has_records(rd):
            continue
        runs.append(load_run(rd))
        rates.append(float(it["rate"]))
    return Sweep(path=p, meta=meta, rates=rates, runs=runs)


# ---- running a sweep (side effects) ----------------------------------------------------------

def _stop_if_interrupted(res: Any) -> None:
    """A run cut short by Ctrl-C/SIGTERM (saved as partial) stops the whole sweep."""
    if res.summary["validity"]["verdict"] == "PARTIAL":
        raise KeyboardInterrupt

def _write(path: Path, obj: Any) -> None:
    from loadgen.manifest import write_json_atomic
    from loadgen.run import _json_safe

    write_json_atomic(path, _json_safe(obj))


def _one_run(ns: argparse.Namespace, rate: float, n: int, root: Path, name: str, argv: list[str],
             quiet: bool, extra: dict) -> Any:
    from loadgen.cli import client_config
    from loadgen.engine import EngineOptions
    from loadgen.run import RunSpec, execute
    from loadgen.workload_flags import build_workload

    ns2 = copy.copy(ns)
    ns2.num_prompts = n
    if ns.trace:
        ns2.trace_rate = None if math.isinf(rate) else rate
    else:
        ns2.request_rate = rate
    wl = build_workload(ns2)
    spec = RunSpec(
        client=client_config(ns), workload=wl,
        engine=EngineOptions(max_concurrency=ns.max_concurrency,
                             connection_limit=ns.max_connections, keepalive=ns.keepalive),
        result_dir=root, run_name=name, max_send_lag_ms=ns.max_send_lag_ms,
        keep_chunk_times=ns.keep_chunk_times, do_preflight=not ns.skip_preflight,
        progress=ns.progress and not quiet, quiet=quiet, argv=argv, extra_manifest=extra,
    )
    return execute(spec)


def requests_for(rate: float, ns: argparse.Namespace) -> int:
    """--num-prompts if given, else about --duration-per-rate seconds of load (>= 20)."""
    if ns.num_prompts:
        return int(ns.num_prompts)
    return max(20, int(round(rate * ns.duration_per_rate)))


def run_sweep(ns: argparse.Namespace, argv: list[str], log=print,
              extra_manifest: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """Run the sweep the flags describe; return its directory and sweep.json's content.

    ``extra_manifest`` is merged into every run's manifest (the experiment matrix records the
    cell and the launched server there). A run interrupted by SIGINT/SIGTERM (a partial run)
    ends the sweep: it raises KeyboardInterrupt after recording that run."""
    from loadgen.flags import UsageError

    if ns.plan:
        raise UsageError("--plan fixes every request's time, so it cannot be swept over rates; "
                         "use the random dataset or --trace (swept with --trace-rate)")
    rates = parse_rates(ns.rates)
    rules = StopRules(max_error_fraction=ns.max_error_fraction,
                      min_throughput_ratio=ns.min_throughput_ratio,
                      max_latency_growth=ns.max_latency_growth)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = Path(ns.result_dir) / (ns.run_name or f"sweep-{stamp}")
    root.mkdir(parents=True, exist_ok=False)
    meta: dict[str, Any] = {
        "kind": "llm-loadgen sweep",
        "created_utc": datetime.now(UTC).isoformat(),
        "command": redact_argv(argv),  # no --api-key or auth header values on disk
        "status": "running",
        "config": {
            "base_url": ns.base_url or f"http://{ns.host}:{ns.port}",
            "model": ns.model,
            "rates": ns.rates,
            "mode": "auto" if rates is None else "list",
            "auto_fractions": parse_fractions(ns.auto_fractions),
            "num_prompts": ns.num_prompts,
            "duration_per_rate_s": ns.duration_per_rate,
            "stop_rules": asdict(rules),
            "no_stop": ns.no_stop,
        },
        "probe": None,
        "runs": [],
        "stopped": {"early": False, "at_rate": None, "reasons": []},
    }
    _write(root / "sweep.json", meta)
    extra = {"sweep": {"dir": str(root)}, **(extra_manifest or {})}
    try:
        if rates is None:
            pr = float(ns.probe_rate) if ns.probe_rate else math.inf
            log(f"sweep: saturation probe, {ns.probe_requests} requests at rate {pr:g}")
            res = _one_run(ns, pr, ns.probe_requests, root, "probe", argv, ns.quiet, extra)
            _stop_if_interrupted(res)
            run = load_run(res.run_dir)
            ok = run.requests.column("status").to_numpy(zero_copy_only=False) == "ok"
            sat = saturation_throughput(col(run.requests, "t_done")[ok])
            fr = meta["config"]["auto_fractions"]
            rates = sorted({round_rate(f * sat) for f in fr})
            meta["probe"] = {
                "run_dir": "probe", "requests": ns.probe_requests, "rate": ns.probe_rate or "inf",
                "method": "completion rate between the 10% and 90% completion quantiles of an "
                          "overload burst", "saturation_rps": sat, "fractions": fr,
            }
            log(f"sweep: saturation throughput ~{sat:.3g} req/s; rates {rates}")
        meta["config"]["resolved_rates"] = rates
        _write(root / "sweep.json", meta)
        for i, rate in enumerate(rates):
            n = requests_for(rate, ns)
            log(f"sweep: rate {rate:g} req/s, {n} requests ({i + 1}/{len(rates)})")
            res = _one_run(ns, rate, n, root, rate_dir_name(rate), argv, ns.quiet, extra)
            check = saturation_check(load_run(res.run_dir), rules)
            s = res.summary
            meta["runs"].append({
                "rate": rate, "run_dir": rate_dir_name(rate), "requests": n,
                "exit_code": res.exit_code, "verdict": s["validity"]["verdict"],
                "request_throughput": s["throughput"]["request_throughput"], "check": check,
            })
            _write(root / "sweep.json", meta)
            if s["validity"]["verdict"] == "PARTIAL":  # Ctrl-C / SIGTERM during that run
                m = orjson.loads((res.run_dir / "manifest.json").read_bytes())
                raise KeyboardInterrupt(m.get("interrupted_by") or "SIGINT")
            if check["saturated"]:
                log(f"sweep: rate {rate:g} saturated: {'; '.join(check['reasons'])}")
                if not ns.no_stop and i < len(rates) - 1:
                    meta["stopped"] = {"early": True, "at_rate": rate, "reasons": check["reasons"],
                                       "skipped_rates": rates[i + 1:]}
                    break
        meta["status"] = "stopped early" if meta["stopped"]["early"] else "complete"
    except KeyboardInterrupt:
        meta["status"] = "interrupted"
        raise
    except BaseException as e:
        meta["status"] = "failed"
        meta["failure"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        _write(root / "sweep.json", meta)
    return root, meta
