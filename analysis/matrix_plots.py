"""PNG plots of the matrix report (matplotlib, Agg): heat map of a value over two axes, latency
curves overlaid per series, fitted coefficients side by side. Each returns PNG bytes."""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.plots import _mpl, _png


def plot_axis_heatmap(xs: list[Any], ys: list[Any], grid: np.ndarray, labels: list[list[str]],
                      x_name: str, y_name: str, title: str, unit: str) -> bytes:
    """``grid[j, i]`` is the value at (xs[i], ys[j]); NaN cells show ``labels[j][i]`` on grey."""
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(1.3 * len(xs) + 3, 0.7 * len(ys) + 2))
    masked = np.ma.masked_invalid(grid)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    im = ax.imshow(masked, origin="lower", cmap=cmap, aspect="auto")
    finite = grid[np.isfinite(grid)]
    mid = float(np.median(finite)) if finite.size else 0.0
    for j in range(len(ys)):
        for i in range(len(xs)):
            v = grid[j, i]
            text = f"{v:.3g}" if np.isfinite(v) else labels[j][i]
            color = "white" if np.isfinite(v) and v <= mid else "black"
            ax.text(i, j, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=unit)
    fig.tight_layout()
    return _png(fig)


def plot_overlaid_curves(series: dict[str, list[dict[str, Any]]], metrics: list[str],
                         slo: dict[str, float] | None, title: str) -> bytes:
    """One panel per metric key of the points (e.g. ``ttft_p99_ms``), one line per series,
    latency against achieved throughput."""
    plt = _mpl()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    for ax, key in zip(axes[0], metrics, strict=True):
        for name, pts in series.items():
            pts = sorted(pts, key=lambda p: p["rate"])
            x = [p["achieved_rps"] for p in pts]
            y = [np.nan if p.get(key) is None else p[key] for p in pts]
            ax.plot(x, y, marker="o", label=name)
        metric, pct = key.split("_")[0], key.split("_")[1]
        thr = (slo or {}).get(f"{metric}_{pct}_ms")
        if thr is not None:
            top = max((p.get(key) or 0 for pts in series.values() for p in pts), default=0)
            if thr <= 3 * max(top, 1e-9):
                ax.axhline(thr, color="red", linestyle="--", linewidth=1, label=f"SLO {thr:g} ms")
        ax.set_xlabel("achieved throughput (ok req/s)")
        ax.set_ylabel(f"{metric.upper()} {pct} (ms, from intended)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def plot_fit_bars(labels: list[str], values: dict[str, list[float | None]], title: str) -> bytes:
    """Horizontal bars, one group per label and one bar per coefficient name (NaN: no bar)."""
    plt = _mpl()
    names = list(values)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 0.35 * len(labels) + 1.6),
                             squeeze=False, sharey=True)
    y = np.arange(len(labels))
    for ax, name in zip(axes[0], names, strict=True):
        v = np.array([np.nan if x is None else x for x in values[name]], dtype=float)
        ax.barh(y, np.nan_to_num(v), color=np.where(np.isfinite(v), "tab:blue", "white"))
        for k, x in enumerate(v):
            if not np.isfinite(x):
                ax.text(0, k, " n/a", va="center", fontsize=7, color="grey")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(y, labels, fontsize=7)
    axes[0][0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)
