"""A picture of a fit: a trace's real vs fitted inter-arrival and length distributions (PNG).

Four panels, each an empirical CDF of the trace (successful requests) against the model:

- inter-arrival gaps, log x: the trace's gaps, the best family's CDF (with its point mass p0
  at zero gaps: F(g) = p0 + (1 - p0) F_family(g)) and one sample of the model of the
  trace's size (what ``--from-fit`` sends);
- input and output lengths, log x: the trace's lengths and a sample of the fitted model
  (empirical quantiles joined by the Gaussian copula);
- input vs output (log-log scatter): the trace against the sample, with both Spearman rhos,
  to show the dependence is kept.

matplotlib with the Agg backend (no display); the ``report`` extra installs it.
"""

from __future__ import annotations

import io

import numpy as np
from scipy import stats

from arrivals.fit import WorkloadModel, frozen_dist, sample_model
from arrivals.traces.trace import Trace


def _ecdf(ax, x: np.ndarray, label: str, **kw) -> None:
    x = np.sort(np.asarray(x, dtype=np.float64))
    ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", label=label, **kw)


def plot_fit(trace: Trace, model: WorkloadModel, *, seed: int = 0, title: str | None = None,
             dpi: int = 90) -> bytes:
    """The PNG (bytes) of ``trace``'s real vs ``model``'s fitted distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = trace.take(trace.ok) if not np.all(trace.ok) else trace
    real_gaps = np.diff(np.sort(tr.t))
    t, inp, out = sample_model(model, len(tr), request_rate=model.rate, seed=seed)
    fit_gaps = np.diff(t)
    best = model.iat.best
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0, 0]
    pos = real_gaps[real_gaps > 0]
    lo = max(float(pos.min()) if pos.size else 1e-3, 1e-6)
    hi = float(max(real_gaps.max(), fit_gaps.max()))
    _ecdf(ax, np.maximum(real_gaps, lo), "trace", color="black", linewidth=1.5)
    _ecdf(ax, np.maximum(fit_gaps, lo), "fitted model (sample)", color="tab:orange")
    g = np.geomspace(lo, hi, 400)
    p0 = model.iat.p_zero
    ax.plot(g, p0 + (1 - p0) * frozen_dist(best.family, best.params).cdf(g), "--",
            color="tab:blue", label=f"{best.family} CDF (KS D {best.ks_stat:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("inter-arrival gap (s)" + (f"; zero gaps drawn at {lo:g}" if p0 else ""))
    ax.set_title(f"inter-arrival: mean {real_gaps.mean():.3g} s, CV {model.iat.sample_cv:.2f}")
    for ax, real, fit, name in ((axes[0, 1], tr.input_tokens, inp, "input tokens"),
                                (axes[1, 0], tr.output_tokens, out, "output tokens")):
        _ecdf(ax, np.maximum(real, 1), "trace", color="black", linewidth=1.5)
        _ecdf(ax, np.maximum(fit, 1), "fitted model (sample)", color="tab:orange")
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_title(f"{name}: mean {np.mean(real):.0f} real, {np.mean(fit):.0f} fitted")
    ax = axes[1, 1]
    ax.scatter(np.maximum(tr.input_tokens, 1), np.maximum(tr.output_tokens, 1), s=6,
               color="black", alpha=0.5, label=f"trace (Spearman {model.lengths.spearman:.2f})")
    rho = float(stats.spearmanr(inp, out).statistic)
    ax.scatter(inp, out, s=6, color="tab:orange", alpha=0.4,
               label=f"fitted (Spearman {rho:.2f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input tokens")
    ax.set_ylabel("output tokens")
    ax.set_title("input vs output length")
    for a in axes.flat:
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="lower right" if a is not axes[1, 1] else "upper left")
    for a in (axes[0, 0], axes[0, 1], axes[1, 0]):
        a.set_ylabel("fraction of requests <= x")
    name = trace.source.rsplit("/", 1)[-1]
    fig.suptitle(title or f"{name}: {len(tr)} requests, real vs fitted (seed {seed})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
