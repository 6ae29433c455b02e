"""PNG plots for the report (matplotlib, Agg backend: no display needed). Each returns bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from analysis.curves import CURVE_PERCENTILES, METRIC_LABEL, pword
from analysis.load import Run
from analysis.metrics import col


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _mpl().close(fig)
    return buf.getvalue()


def plot_curves(curves: dict[str, Any]) -> bytes:
    """Latency percentiles (with 95 % CI bars) vs achieved throughput, one panel per metric."""
    plt = _mpl()
    pts = curves["points"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    x = np.array([p["achieved_rps"] for p in pts])
    slo = curves.get("slo") or {}
    for ax, metric in zip(axes.flat, ("ttft", "itl", "e2e", "norm"), strict=True):
        for p in CURVE_PERCENTILES:
            k = f"p{pword(p)}"
            y = np.array([np.nan if q["latency_ms"][metric][k] is None
                          else q["latency_ms"][metric][k] for q in pts], dtype=float)
            lo = np.array([q["latency_ms"][metric][f"{k}_ci"][0] for q in pts], dtype=float)
            hi = np.array([q["latency_ms"][metric][f"{k}_ci"][1] for q in pts], dtype=float)
            err = np.vstack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)])
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=k)
        top = max((v for q in pts for v in (q["latency_ms"][metric]["p99"],) if v), default=0)
        for key, thr in slo.items():
            if key.startswith(metric + "_"):
                if thr <= 3 * top:
                    ax.axhline(thr, color="red", linestyle="--", linewidth=1, label=f"SLO {key}")
                else:  # far above the data: a line there would flatten the curves
                    ax.plot([], [], " ", label=f"SLO {key} = {thr:g} (off scale)")
        unit = "ms per output token" if metric == "norm" else "ms"
        ax.set_title(f"{METRIC_LABEL[metric]} vs achieved throughput")
        ax.set_xlabel("achieved throughput (ok req/s)")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def plot_throughput(curves: dict[str, Any]) -> bytes:
    """Achieved throughput and goodput vs offered rate (the diagonal is 'keeps up')."""
    plt = _mpl()
    pts = curves["points"]
    fig, ax = plt.subplots(figsize=(6, 4))
    r = np.array([p["rate"] for p in pts], dtype=float)
    ax.plot(r, r, color="grey", linestyle=":", label="offered = achieved")
    ax.plot(r, [p["achieved_rps"] for p in pts], marker="o", label="achieved (ok req/s)")
    if curves.get("slo"):
        ax.plot(r, [p["goodput_rps"] for p in pts], marker="s", label="goodput (within SLO)")
    k = curves.get("knee") or {}
    if k.get("rate") is not None:
        ax.axvline(k["rate"], color="red", linestyle="--", linewidth=1, label="knee")
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("req/s")
    ax.set_title("throughput and goodput vs offered load")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _bin_width(span: float) -> float:
    """About 60 bins over the run, at least 0.1 s, rounded to 1/2/5 x 10^k seconds."""
    raw = max(span / 60.0, 0.1)
    k = 10 ** np.floor(np.log10(raw))
    return float(min((m * k for m in (1, 2, 5, 10) if m * k >= raw), default=raw))


def plot_timeseries(run: Run) -> bytes:
    """Offered (intended) vs sent vs completed rate and in-flight requests over the run, from
    requests.parquet (binned), with timeseries.parquet's once-a-second in-flight samples; and
    the latency of every request against its intended send time."""
    plt = _mpl()
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    tb = run.requests
    status = tb.column("status").to_numpy(zero_copy_only=False)
    ok = status == "ok"
    ti, ts_, td = col(tb, "t_intended"), col(tb, "t_sent"), col(tb, "t_done")
    end = float(np.nanmax(np.concatenate([ti, ts_, td]))) if len(ti) else 1.0
    w = _bin_width(end)
    edges = np.arange(0.0, end + w, w)
    for name, v, style in (("intended (offered)", ti, ":"), ("sent", ts_, "-"),
                           ("completed ok", td[ok], "-"), ("failed", td[~ok], "-")):
        v = v[np.isfinite(v)]
        if name == "failed" and not v.size:
            continue
        h, _ = np.histogram(v, edges)
        kw = {"color": "black", "zorder": 3} if style == ":" else {}
        axes[0].stairs(h / w, edges, linestyle=style, label=name, **kw)
    axes[0].set_ylabel("req/s")
    axes[0].set_title(f"offered vs achieved rate ({w:g} s bins)")
    axes[0].legend(fontsize=8, ncol=4)
    grid = np.linspace(0.0, end, 400)
    sent_f, done_f = np.sort(ts_[np.isfinite(ts_)]), np.sort(td[np.isfinite(ts_)])
    inflight = (np.searchsorted(sent_f, grid, side="right")
                - np.searchsorted(done_f, grid, side="right"))
    axes[1].plot(grid, inflight, color="tab:purple", label="from requests.parquet")
    ts = run.timeseries
    if ts is not None and ts.num_rows:
        axes[1].plot(col(ts, "t"), col(ts, "in_flight"), "o", color="black", markersize=4,
                     label="generator's samples (timeseries.parquet)")
    axes[1].set_ylabel("in flight")
    axes[1].set_title("requests in flight")
    axes[1].legend(fontsize=8)
    axes[2].scatter(ti[ok], ((td - ti) * 1e3)[ok], s=6, label="E2E from intended")
    axes[2].scatter(ti[ok], ((col(tb, "t_first_token") - ti) * 1e3)[ok], s=6,
                    label="TTFT from intended")
    if (~ok).any():
        axes[2].scatter(ti[~ok], np.zeros((~ok).sum()), marker="x", color="red", s=12,
                        label="failed")
    axes[2].set_ylabel("ms")
    axes[2].set_xlabel("seconds from t0 (request's intended send time)")
    axes[2].set_title("latency of each request")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_heatmap(buckets: dict[str, Any], key: str, title: str) -> bytes:
    """A value of each (input, output) length bucket cell on the bucket grid (NaN = empty)."""
    plt = _mpl()
    ie, oe = list(buckets["input_edges"]), list(buckets["output_edges"])
    grid = np.full((len(oe) - 1, len(ie) - 1), np.nan)
    counts = np.zeros_like(grid, dtype=int)
    for c in buckets["cells"]:
        try:
            i, j = ie.index(c["input_lo"]), oe.index(c["output_lo"])
        except ValueError:
            continue
        if c.get(key) is not None and i < grid.shape[1] and j < grid.shape[0]:
            grid[j, i] = c[key]
            counts[j, i] = c.get("n", 0)
    fig, ax = plt.subplots(figsize=(1.2 * grid.shape[1] + 3, 0.8 * grid.shape[0] + 2))
    im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap="viridis", aspect="auto")
    for j in range(grid.shape[0]):
        for i in range(grid.shape[1]):
            if np.isfinite(grid[j, i]):
                ax.text(i, j, f"{grid[j, i]:.0f}\nn={counts[j, i]}", ha="center", va="center",
                        fontsize=7, color="white")
    ax.set_xticks(range(grid.shape[1]), [f"{ie[i]:g}-{ie[i + 1]:g}" for i in range(len(ie) - 1)],
                  rotation=30, fontsize=7)
    ax.set_yticks(range(grid.shape[0]), [f"{oe[j]:g}-{oe[j + 1]:g}" for j in range(len(oe) - 1)],
                  fontsize=7)
    ax.set_xlabel("input tokens")
    ax.set_ylabel("output tokens")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="ms")
    fig.tight_layout()
    return _png(fig)
