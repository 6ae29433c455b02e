"""Fitting a workload model to a trace: inter-arrival times and request lengths.

Inter-arrival times. Gaps g_i = t_{i+1} - t_i of the successful requests. Traces stamp
requests with a finite resolution (BurstGPT: 1 s, Mooncake: ~3 s ticks), so many gaps are
exactly 0; we model them as a point mass p0 = P(g = 0) plus a continuous family for g > 0:

    exponential  f(x) = (1/s) exp(-x/s)                                      1 parameter
    gamma        f(x) = x^(k-1) exp(-x/s) / (Gamma(k) s^k)                   2 parameters
    weibull      f(x) = (k/s) (x/s)^(k-1) exp(-(x/s)^k)                     2 parameters
    lognormal    f(x) = exp(-(ln x - ln s)^2 / (2 sigma^2)) / (x sigma sqrt(2 pi))  2

each fitted by maximum likelihood with ``scipy.stats.<dist>.fit(g, floc=0)`` (location fixed
at 0). The best family minimises AIC = 2 p - 2 ln L (p parameters, ln L the log-likelihood of
the positive gaps at the MLE); the KS statistic D = sup |F_n - F| and its p-value are
reported for each as goodness of fit (the p-value assumes known parameters, so it is
optimistic for fitted ones: read D as a distance).

The rate is what a replay must get right, and MLE of a misfitting family (lognormal or
Weibull on a heavy tail) can miss the mean by tens of percent. So the model keeps the MLE
*shape* and calibrates the *scale* so that E[X] equals the sample mean of the positive gaps
(for exponential and gamma the MLE already does); ``mle_params`` and ``mle_mean`` keep the
uncalibrated fit for reference. The model's mean gap is then (1 - p0) E[X] = the sample mean.

Lengths: :mod:`arrivals.fit_lengths` (empirical marginals + Gaussian copula).

A fitted :class:`WorkloadModel` is plain JSON (:meth:`WorkloadModel.save`) and generates a
synthetic workload at any rate and length scale (:func:`model_workload`): gaps are drawn
from the chosen family (zeros with probability p0) and multiplied by
(1/rate) / (fitted mean gap), which changes the rate and keeps the CV (the burst shape).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from scipy import stats

from arrivals.fit_lengths import LengthModel, fit_lengths
from arrivals.prompts import word_prompts
from arrivals.traces.trace import Trace
from arrivals.workload import Workload

FAMILIES = ("exponential", "gamma", "weibull", "lognormal")
MODEL_FORMAT, MODEL_VERSION = "loadgen-workload-model", 1


def frozen_dist(family: str, params: dict[str, float]) -> Any:
    """The scipy.stats frozen distribution of a family with our parameter names."""
    if family == "exponential":
        return stats.expon(scale=params["scale"])
    if family == "gamma":
        return stats.gamma(params["shape"], scale=params["scale"])
    if family == "weibull":
        return stats.weibull_min(params["shape"], scale=params["scale"])
    if family == "lognormal":
        return stats.lognorm(params["sigma"], scale=params["scale"])
    raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")


def _mle(family: str, g: np.ndarray) -> dict[str, float]:
    if family == "exponential":
        return {"scale": float(g.mean())}
    if family == "gamma":
        k, _, s = stats.gamma.fit(g, floc=0)
        return {"shape": float(k), "scale": float(s)}
    if family == "weibull":
        k, _, s = stats.weibull_min.fit(g, floc=0)
        return {"shape": float(k), "scale": float(s)}
    if family == "lognormal":
        sig, _, s = stats.lognorm.fit(g, floc=0)
        return {"sigma": float(sig), "scale": float(s)}
    raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")


@dataclass(frozen=True)
class FamilyFit:
    family: str
    params: dict[str, float]
    loglik: float
    aic: float
    ks_stat: float
    ks_pvalue: float
    mean: float  # of the continuous part (g > 0), after calibration = sample mean of g > 0
    cv: float  # of the continuous part
    mle_params: dict[str, float] = field(default_factory=dict)  # before calibration
    mle_mean: float = math.nan  # mean of the MLE fit (differs from ``mean`` if misfitting)


@dataclass(frozen=True)
class IatFit:
    """The inter-arrival fits of one trace, best first by AIC."""

    n_gaps: int
    p_zero: float
    sample_mean: float  # of all gaps, zeros included
    sample_cv: float
    fits: list[FamilyFit]
    criterion: str = "aic"

    @property
    def best(self) -> FamilyFit:
        return self.fits[0]

    def get(self, family: str | None = None) -> FamilyFit:
        if family is None:
            return self.best
        for f in self.fits:
            if f.family == family:
                return f
        raise ValueError(f"no fit of family {family!r}; have {', '.join(f.family for f in self.fits)}")

    def fitted_mean(self, family: str | None = None) -> float:
        """Mean gap of the model: (1 - p0) * E[X]."""
        return (1.0 - self.p_zero) * self.get(family).mean

    def sample(self, n: int, rng: np.random.Generator, family: str | None = None) -> np.ndarray:
        f = self.get(family)
        g = frozen_dist(f.family, f.params).rvs(size=n, random_state=rng)
        if self.p_zero > 0:
            g = np.where(rng.random(n) < self.p_zero, 0.0, g)
        return np.asarray(g, dtype=np.float64)


def fit_interarrivals(gaps: np.ndarray, families: tuple[str, ...] = FAMILIES) -> IatFit:
    """Fit each family to the positive gaps; best first by AIC (see the module docstring)."""
    g_all = np.asarray(gaps, dtype=np.float64)
    if g_all.size < 3 or not np.all(np.isfinite(g_all)) or np.any(g_all < 0):
        raise ValueError(f"need at least 3 finite, non-negative inter-arrival times, got "
                         f"{g_all.size}")
    g = g_all[g_all > 0]
    if g.size < 3:
        raise ValueError("fewer than 3 positive inter-arrival times: the trace's times are "
                         "too coarse to fit")
    fits = []
    for fam in families:
        mle = _mle(fam, g)
        d = frozen_dist(fam, mle)
        ll = float(np.sum(d.logpdf(g)))
        ks = stats.kstest(g, d.cdf)
        mle_mean, var = (float(v) for v in d.stats(moments="mv"))
        # Calibrate the scale so that the mean is the sample mean (a scale change keeps the
        # shape, so the CV is the MLE's); identity for exponential and gamma, whose MLE
        # already matches the mean.
        params = {**mle, "scale": mle["scale"] * float(g.mean()) / mle_mean}
        fits.append(FamilyFit(family=fam, params=params, loglik=ll, aic=2 * len(mle) - 2 * ll,
                              ks_stat=float(ks.statistic), ks_pvalue=float(ks.pvalue),
                              mean=float(g.mean()), cv=math.sqrt(var) / mle_mean,
                              mle_params=mle, mle_mean=mle_mean))
    fits.sort(key=lambda f: (not math.isfinite(f.aic), f.aic))
    m = float(g_all.mean())
    return IatFit(n_gaps=int(g_all.size), p_zero=float(1 - g.size / g_all.size), sample_mean=m,
                  sample_cv=float(g_all.std() / m) if m > 0 else math.nan, fits=fits)


@dataclass(frozen=True)
class WorkloadModel:
    """A fitted, JSON-serialisable model of a trace's arrivals and lengths."""

    iat: IatFit
    lengths: LengthModel
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """The fitted mean request rate (1 / fitted mean gap)."""
        return 1.0 / self.iat.fitted_mean()

    def to_dict(self) -> dict[str, Any]:
        iat = asdict(self.iat)
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "source": self.source,
                "interarrival": {**iat, "best": self.iat.best.family,
                                 "fitted_mean": self.iat.fitted_mean(),
                                 "fitted_rate": self.rate},
                "lengths": self.lengths.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model") -> WorkloadModel:
        if d.get("format") != MODEL_FORMAT or d.get("version") != MODEL_VERSION:
            raise ValueError(f"{where}: not a {MODEL_FORMAT} v{MODEL_VERSION} file (format="
                             f"{d.get('format')!r}); write one with `loadgen workload fit`")
        try:
            i = d["interarrival"]
            iat = IatFit(n_gaps=int(i["n_gaps"]), p_zero=float(i["p_zero"]),
                         sample_mean=float(i["sample_mean"]), sample_cv=float(i["sample_cv"]),
                         fits=[FamilyFit(**f) for f in i["fits"]],
                         criterion=str(i.get("criterion", "aic")))
            return cls(iat=iat, lengths=LengthModel.from_dict(d["lengths"]),
                       source=dict(d.get("source") or {}))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: malformed workload model ({type(e).__name__}: {e})") \
                from None

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2
                                   | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE))
        return p

    @classmethod
    def load(cls, path: str | Path) -> WorkloadModel:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"{p}: no such workload model; write one with "
                             f"`loadgen workload fit TRACE --trace-format F --output {p}`")
        try:
            d = orjson.loads(p.read_bytes())
        except orjson.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{p}: expected a JSON object (a workload model)")
        return cls.from_dict(d, where=str(p))


def fit_trace(trace: Trace) -> WorkloadModel:
    """Fit the successful requests of ``trace`` (failed ones are left out)."""
    tr = trace.take(trace.ok) if not np.all(trace.ok) else trace
    if len(tr) < 4:
        raise ValueError(f"{trace.source}: {len(tr)} successful requests; need at least 4 to fit")
    t = np.sort(tr.t)
    iat = fit_interarrivals(np.diff(t))
    lengths = fit_lengths(np.maximum(tr.input_tokens, 1), np.maximum(tr.output_tokens, 1))
    src = {"trace": trace.source, "format": trace.format, "requests": int(len(tr)),
           "failed_left_out": int(len(trace) - len(tr)), "span_s": float(t[-1] - t[0]),
           "rate": float((len(t) - 1) / (t[-1] - t[0])) if t[-1] > t[0] else None,
           "transforms": list(trace.transforms)}
    return WorkloadModel(iat=iat, lengths=lengths, source=src)


def sample_model(
    model: WorkloadModel,
    n: int,
    *,
    request_rate: float,
    length_scale: float = 1.0,
    family: str | None = None,
    length_family: str = "empirical",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrival times, input and output lengths of ``n`` requests drawn from ``model``."""
    s_iat, s_len, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    fam = model.iat.get(family)
    gaps = model.iat.sample(n, s_iat, fam.family)
    gaps *= (1.0 / request_rate) / model.iat.fitted_mean(fam.family)
    inp, out = model.lengths.sample(n, s_len, scale=length_scale, family=length_family)
    return np.cumsum(gaps), inp, out


def model_workload(
    model: WorkloadModel,
    num_requests: int,
    *,
    request_rate: float | None = None,
    length_scale: float = 1.0,
    family: str | None = None,
    length_family: str = "empirical",
    seed: int = 0,
) -> Workload:
    """A synthetic workload from a fitted model, at ``request_rate`` (default: the fitted rate).

    Gaps come from the best family (or ``family``) with the fitted p0, rescaled so the mean
    gap is 1/rate (the CV is kept); lengths from the copula model times ``length_scale``.
    Prompts are common words (use :mod:`arrivals.tokens` for exact-length prompts).
    """
    if num_requests < 1:
        raise ValueError(f"number of requests must be >= 1, got {num_requests}")
    rate = model.rate if request_rate is None else float(request_rate)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"request rate must be a finite number > 0 for a fitted model, got {rate}")
    if not (math.isfinite(length_scale) and length_scale > 0):
        raise ValueError(f"length scale must be a number > 0, got {length_scale}")
    s_text = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    fam = model.iat.get(family)
    t, inp, out = sample_model(model, num_requests, request_rate=rate, length_scale=length_scale,
                               family=family, length_family=length_family, seed=seed)
    desc = {"kind": "fitted", "model_source": model.source, "family": fam.family,
            "params": fam.params, "p_zero": model.iat.p_zero, "request_rate": rate,
            "fitted_rate": model.rate, "length_scale": length_scale,
            "length_family": length_family, "copula_rho": model.lengths.rho,
            "num_requests": num_requests, "seed": seed,
            "prompt_text": "random common English words, ~1 token each (exact on the sim)"}
    return Workload(t_intended=t, prompts=word_prompts(inp, s_text), input_tokens=inp,
                    output_tokens=out, dataset="fitted", description=desc)


def _stats(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    m = float(x.mean())
    return {"mean": m, "cv": float(x.std() / m) if m else math.nan,
            "p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99))}


def compare(trace: Trace, model: WorkloadModel, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Real vs fitted statistics (mean, CV, p50, p99) of gaps and lengths, same size sample."""
    tr = trace.take(trace.ok) if not np.all(trace.ok) else trace
    n = len(tr)
    t, inp, out = sample_model(model, n, request_rate=model.rate, seed=seed)
    real_gaps = np.diff(np.sort(tr.t))
    fit_gaps = np.diff(t)
    rho_fit = float(stats.spearmanr(inp, out).statistic)
    return {
        "interarrival_s": {"real": _stats(real_gaps), "fitted": _stats(fit_gaps)},
        "input_tokens": {"real": _stats(tr.input_tokens), "fitted": _stats(inp)},
        "output_tokens": {"real": _stats(tr.output_tokens), "fitted": _stats(out)},
        "spearman_in_out": {"real": model.lengths.spearman, "fitted": rho_fit},
    }


def format_model(model: WorkloadModel, comparison: dict | None = None) -> str:
    """A human-readable report of a fitted model."""
    i = model.iat
    lines = [f"trace: {model.source.get('trace')} ({model.source.get('format')}), "
             f"{model.source.get('requests')} requests over {model.source.get('span_s', 0):.1f} s",
             f"inter-arrival gaps: n={i.n_gaps} mean={i.sample_mean:.4g} s CV={i.sample_cv:.3f} "
             f"zero gaps p0={i.p_zero:.3f}",
             f"  {'family':<12}{'params':<38}{'AIC':>12}{'KS D':>8}{'KS p':>10}{'CV':>7}"]
    for f in i.fits:
        ps = ", ".join(f"{k}={v:.4g}" for k, v in f.params.items())
        lines.append(f"  {f.family:<12}{ps:<38}{f.aic:>12.1f}{f.ks_stat:>8.3f}"
                     f"{f.ks_pvalue:>10.2g}{f.cv:>7.3f}")
    lines.append(f"  best by AIC: {i.best.family}; fitted mean gap {i.fitted_mean():.4g} s "
                 f"(rate {model.rate:.4g} req/s)")
    L = model.lengths
    for name, m in (("input", L.input), ("output", L.output)):
        z = f"a={m.zipf['a']:.3f} KS={m.zipf['ks']:.3f}" if m.zipf else "n/a"
        lines.append(f"{name} lengths: mean={m.mean:.1f} CV={m.cv:.3f} lognormal(mu="
                     f"{m.lognormal['mu']:.3f}, sigma={m.lognormal['sigma']:.3f}) "
                     f"KS={m.lognormal['ks']:.3f}; zipf {z}; sampled: empirical")
    lines.append(f"input/output: Spearman {L.spearman:.3f}, Gaussian copula rho {L.rho:.3f}")
    if comparison:
        lines.append(f"  {'':<16}{'real mean':>12}{'fit mean':>12}{'real CV':>10}{'fit CV':>10}"
                     f"{'real p99':>12}{'fit p99':>12}")
        for k in ("interarrival_s", "input_tokens", "output_tokens"):
            r, f = comparison[k]["real"], comparison[k]["fitted"]
            lines.append(f"  {k:<16}{r['mean']:>12.4g}{f['mean']:>12.4g}{r['cv']:>10.3f}"
                         f"{f['cv']:>10.3f}{r['p99']:>12.4g}{f['p99']:>12.4g}")
    return "\n".join(lines)
