"""One self-contained HTML report across the cells of an experiment matrix (docs/experiments.md).

``write_matrix_report(store, experiment, expansion)`` writes, into
``STORE/matrices/<name>/report/`` by default:
  report.html  inline CSS, PNGs as data URIs, no JavaScript (as analysis/report.py)
  report.json  every number shown
  *.png        the plots as files
Sections:
- the cells: complete / failed / skipped / pending, with the cause of each failure or skip;
- capacity at the SLO per cell: the knee (analysis/curves.py: the highest offered rate such
  that it and every lower rate meet every SLO threshold) with its interval, as a table and as
  heat maps over two chosen axes (one per combination of the other axes; repetitions are
  combined by their median);
- latency vs load: p99 TTFT and E2E (from intended) against achieved throughput, one line per
  value of the overlay axis (runtime by default), one figure per combination of the others;
- length-conditioned fits side by side: ``e2e = a + b x input + c x output`` and
  ``ttft = a + b x input`` (analysis/fit.py, median regression) of one run per cell (the run at
  the knee, else the lowest rate), with 95 % bootstrap intervals. A coefficient whose length
  did not vary in that run (e.g. a fixed output length) is not identifiable and shown as n/a.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from analysis import matrix_plots
from analysis.report import CSS, _dumps, _e, _f, _Images, _table

AXES_ORDER = ("runtime", "model", "batch_size", "tp", "pp", "workload", "repetition")
MAX_FIGURES = 40
FIT_BOOT = 100


def _point(p: dict[str, Any]) -> dict[str, Any]:
    out = {"rate": p["rate"], "achieved_rps": p["achieved_rps"], "ok": p["ok"],
           "failed": p["failed"], "run_dir": p["run_dir"]}
    for m in ("ttft", "e2e", "itl"):
        for q in ("p50", "p90", "p99"):
            out[f"{m}_{q}_ms"] = p["latency_ms"][m][q]
    return out


def _fits(run) -> dict[str, Any]:
    """Fits of one run, with which coefficients its lengths can identify."""
    from analysis.metrics import col
    from analysis.run_analysis import analyze

    t = run.requests
    ok = t.column("status").to_numpy(zero_copy_only=False) == "ok"
    inp = col(t, "input_tokens", np.int64)[ok]
    out = col(t, "output_tokens", np.int64)[ok]
    r = analyze(run, slo=None, window=None, n_boot=FIT_BOOT)
    fits = r["fits"]
    varies = {"input": bool(inp.size and np.ptp(inp) > 0),
              "output": bool(out.size and np.ptp(out) > 0)}
    for name in ("e2e", "ttft"):
        f = fits.get(name) or {}
        if not varies["input"]:
            f["b_ms_per_input_token"] = None
        if name == "e2e" and not varies["output"]:
            f["c_ms_per_output_token"] = None
    return {"fits": fits, "varies": varies, "n": int(ok.sum()),
            "input_tokens_median": float(np.median(inp)) if inp.size else None,
            "output_tokens_median": float(np.median(out)) if out.size else None}


def collect(store, expansion, slo: dict[str, float] | None = None, fits: bool = True
            ) -> list[dict[str, Any]]:
    """Per cell of the expansion: status and cause, curve points, knee, fits (report.json)."""
    from analysis.curves import curves_of
    from analysis.load import load_run
    from analysis.sweep import load_sweep

    out = []
    for c in expansion.cells:
        rec = store.read_cell(c.id) or {}
        status = store.state(c.id) if store.cell_dir(c.id).exists() else "pending"
        cell_slo = slo if slo is not None else (c.slo or None)
        d: dict[str, Any] = {"cell_id": c.id, "label": c.label, "axes": c.axes,
                             "status": status, "cause": rec.get("cause"), "slo": cell_slo,
                             "attempt": rec.get("attempt"), "points": [], "knee": None,
                             "max_achieved_rps": None, "fit": None}
        sweep_dir = store.cell_dir(c.id) / f"attempt-{rec.get('attempt')}"
        if status == "complete" and (sweep_dir / "sweep.json").exists():
            sw = load_sweep(sweep_dir)
            if sw.runs:
                cv = curves_of(sw, cell_slo)
                d["points"] = [_point(p) for p in cv["points"]]
                d["knee"] = cv.get("knee")
                d["max_achieved_rps"] = max(p["achieved_rps"] for p in cv["points"])
                d["verdicts"] = [r.get("verdict") for r in sw.meta.get("runs", [])]
                d["stopped"] = sw.meta.get("stopped")
                if fits:
                    k = (d["knee"] or {}).get("rate")
                    pick = next((p for p in d["points"] if p["rate"] == k), d["points"][0])
                    try:
                        d["fit"] = {"rate": pick["rate"], **_fits(load_run(pick["run_dir"]))}
                    except Exception as e:  # noqa: BLE001 - one bad fit must not lose the report
                        d["fit"] = {"rate": pick["rate"], "error": f"{type(e).__name__}: {e}"}
        out.append(d)
    return out


def _value(d: dict[str, Any], use_knee: bool) -> float:
    if d["status"] != "complete":
        return math.nan
    if use_knee:
        r = (d.get("knee") or {}).get("rate")
        return float(r) if r is not None else math.nan
    v = d.get("max_achieved_rps")
    return float(v) if v is not None else math.nan


def _nan_label(ds: list[dict[str, Any]], excluded: bool, use_knee: bool) -> str:
    if excluded:
        return "excl."
    if not ds:
        return "-"
    st = ds[0]["status"]
    if st == "complete" and use_knee:
        lowest = min((p["rate"] for p in ds[0]["points"]), default=None)
        return f"<{lowest:g}" if lowest is not None else "?"
    return {"failed": "failed", "skipped": "skipped", "pending": "pending"}.get(st, st)


def heatmaps(cells: list[dict[str, Any]], excluded: list[Any], axes: list[str],
             use_knee: bool) -> list[dict[str, Any]]:
    """One grid per combination of the axes other than ``axes`` (and repetition)."""
    xa, ya = axes
    others = [a for a in AXES_ORDER if a not in (xa, ya, "repetition")]
    xs = sorted({d["axes"][xa] for d in cells} | {x.axes[xa] for x in excluded}, key=_sort_key)
    ys = sorted({d["axes"][ya] for d in cells} | {x.axes[ya] for x in excluded}, key=_sort_key)
    facets = sorted({tuple(d["axes"][a] for a in others) for d in cells}, key=_sort_key)
    out = []
    for f in facets:
        grid = np.full((len(ys), len(xs)), np.nan)
        labels = [["" for _ in xs] for _ in ys]
        for (j, y), (i, x) in itertools.product(enumerate(ys), enumerate(xs)):
            ds = [d for d in cells if d["axes"][xa] == x and d["axes"][ya] == y
                  and tuple(d["axes"][a] for a in others) == f]
            vals = [v for v in (_value(d, use_knee) for d in ds) if math.isfinite(v)]
            if vals:
                grid[j, i] = float(np.median(vals))
            else:
                exc = any(e.axes[xa] == x and e.axes[ya] == y
                          and tuple(e.axes[a] for a in others) == f for e in excluded)
                labels[j][i] = _nan_label(ds, exc and not ds, use_knee)
        out.append({"facet": dict(zip(others, f, strict=True)), "x": xs, "y": ys,
                    "grid": grid, "labels": labels})
    return out


def _sort_key(v: Any) -> Any:
    if isinstance(v, tuple):
        return tuple(_sort_key(x) for x in v)
    return (0, v, "") if isinstance(v, int | float) else (1, 0, str(v))


def _facet_text(f: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in f.items()) or "all cells"


def _status_html(cells: list[dict[str, Any]], excluded: list[Any]) -> str:
    counts: dict[str, int] = {}
    for d in cells:
        counts[d["status"]] = counts.get(d["status"], 0) + 1
    parts = ["<p>" + ", ".join(f"<b>{n}</b> {_e(k)}" for k, n in sorted(counts.items()))
             + f", {len(excluded)} excluded by the file</p>"]
    bad = [d for d in cells if d["status"] != "complete"]
    if bad:
        rows = [[_e(d["label"]), f"<code>{_e(d['cell_id'])}</code>", _e(d["status"]),
                 f"<pre>{_e((d.get('cause') or '')[:1500])}</pre>"] for d in bad]
        parts.append(_table(["cell", "id", "status", "cause"], rows))
    if excluded:
        by: dict[str, int] = {}
        for x in excluded:
            by[x.reason] = by.get(x.reason, 0) + 1
        parts.append("<details><summary>exclusions</summary>" + _table(
            ["cells", "reason"], [[n, _e(r)] for r, n in by.items()], left=0) + "</details>")
    return "".join(parts)


def _capacity_html(cells: list[dict[str, Any]]) -> str:
    head = ["runtime", "model", "batch", "tp", "pp", "workload", "rep", "knee req/s",
            "interval", "achieved at knee", "max achieved req/s", "rates", "verdicts", "note"]
    rows = []
    for d in sorted(cells, key=lambda d: _sort_key(tuple(d["axes"][a] for a in AXES_ORDER))):
        a, k = d["axes"], d.get("knee") or {}
        rates = ", ".join(f"{p['rate']:g}" for p in d["points"])
        verdicts = ", ".join(sorted(set(d.get("verdicts") or [])))
        note = k.get("note") if d["status"] == "complete" else d["status"]
        rows.append([_e(a["runtime"]), _e(a["model"]), a["batch_size"], a["tp"], a["pp"],
                     _e(a["workload"]), a["repetition"], _f(k.get("rate"), 3),
                     f"[{_f(k.get('low'), 3)}, {_f(k.get('high'), 3)})",
                     _f(k.get("achieved_rps"), 2), _f(d.get("max_achieved_rps"), 2), rates,
                     _e(verdicts), _e(note or "")])
    return _table(head, rows, left=2)


def _fits_html(cells: list[dict[str, Any]], overlay: str) -> tuple[str, list[str], dict]:
    head = ["cell", "run rate", "n", "E2E a (ms)", "E2E b (ms/in tok)", "E2E c (ms/out tok)",
            "TTFT a (ms)", "TTFT b (ms/in tok)", "lengths that vary"]
    rows, labels = [], []
    bars: dict[str, list[float | None]] = {"E2E a (ms)": [], "E2E c (ms / output token)": [],
                                           "TTFT b (ms / input token)": []}
    others = [a for a in AXES_ORDER if a != overlay]
    order = sorted((d for d in cells if d.get("fit")),
                   key=lambda d: _sort_key((tuple(d["axes"][a] for a in others),
                                            d["axes"][overlay])))

    def coef(f: dict[str, Any], key: str) -> str:
        v = f.get(key)
        if v is None:
            return "n/a"
        ci = (f.get("ci95") or {}).get(key) or [None, None]
        return f"{_f(v, 3)} [{_f(ci[0], 3)}, {_f(ci[1], 3)}]"

    for d in order:
        fit = d["fit"]
        if "error" in fit:
            rows.append([_e(d["label"]), _f(fit["rate"], 3), "-",
                         f'<span class="warn">{_e(fit["error"])}</span>', "", "", "", "", ""])
            continue
        e2e, ttft = fit["fits"].get("e2e") or {}, fit["fits"].get("ttft") or {}
        vary = ", ".join(k for k, v in fit["varies"].items() if v) or "none"
        rows.append([_e(d["label"]), _f(fit["rate"], 3), fit["n"], coef(e2e, "a_ms"),
                     coef(e2e, "b_ms_per_input_token"), coef(e2e, "c_ms_per_output_token"),
                     coef(ttft, "a_ms"), coef(ttft, "b_ms_per_input_token"), _e(vary)])
        labels.append(d["label"])
        bars["E2E a (ms)"].append(e2e.get("a_ms"))
        bars["E2E c (ms / output token)"].append(e2e.get("c_ms_per_output_token"))
        bars["TTFT b (ms / input token)"].append(ttft.get("b_ms_per_input_token"))
    return _table(head, rows), labels, bars


def build_matrix_report(store, exp, expansion, slo: dict[str, float] | None = None,
                        heatmap: list[str] | None = None, overlay: str = "runtime",
                        fits: bool = True) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    """(html, report.json content, PNGs by name) for the cells of ``expansion`` in ``store``."""
    heatmap = heatmap or ["batch_size", "runtime"]
    img = _Images()
    now = datetime.now(UTC).isoformat()
    cells = collect(store, expansion, slo, fits)
    slos = {orjson.dumps(d["slo"], option=orjson.OPT_SORT_KEYS).decode() for d in cells}
    use_knee = any(d["slo"] for d in cells)
    title = f"llm-loadgen matrix report: {exp.name}"
    body = [f"<h1>{_e(title)}</h1>",
            f"<p>{_e(exp.spec.experiment.description)}</p>" if exp.spec.experiment.description
            else "",
            f"<p>file <code>{_e(exp.path)}</code>, store <code>{_e(store.root)}</code>; "
            f"{len(cells)} cells. Latency is measured from each request's intended send time "
            "(what a user sees). SLO: "
            + (_e(", ".join(sorted(slos))) if use_knee else "none given (no knee: the heat map "
               "shows the highest achieved throughput instead)") + "</p>",
            "<h2>Cells</h2>", _status_html(cells, expansion.excluded)]
    body += ["<h2>Capacity at the SLO</h2>",
             "<p>The knee is the highest offered rate that, with every lower tested rate, meets "
             "every SLO threshold; its interval runs from the highest rate that meets it "
             "confidently (95 % CI) to the first rate that violates it confidently "
             "(analysis/curves.py).</p>", _capacity_html(cells)]
    heat = heatmaps(cells, expansion.excluded, heatmap, use_knee)
    what = "knee (req/s at the SLO)" if use_knee else "max achieved throughput (req/s)"
    body.append(f"<h2>Heat map: {_e(what)} over {_e(heatmap[0])} x {_e(heatmap[1])}</h2>")
    body.append("<p class=\"note\">grey: no value (failed, skipped, pending, excl. = excluded "
                "by the file, &lt;R = even the lowest rate R misses the SLO); repetitions "
                "combined by their median</p>")
    for i, h in enumerate(heat[:MAX_FIGURES]):
        t = f"{what}: {_facet_text(h['facet'])}"
        body.append(img.add(f"heatmap_{i}.png", matrix_plots.plot_axis_heatmap(
            h["x"], h["y"], h["grid"], h["labels"], heatmap[0], heatmap[1], t, "req/s"), t))
    body.append(f"<h2>Latency vs load, per {_e(overlay)}</h2>")
    others = [a for a in AXES_ORDER if a not in (overlay, "repetition")]
    reps = len({d["axes"]["repetition"] for d in cells}) > 1
    facets: dict[tuple, dict[str, list]] = {}
    for d in cells:
        if not d["points"]:
            continue
        key = tuple(d["axes"][a] for a in others)
        name = str(d["axes"][overlay]) + (f" r{d['axes']['repetition']}" if reps else "")
        facets.setdefault(key, {})[name] = d["points"]
    curve_figs = []
    for i, key in enumerate(sorted(facets, key=_sort_key)):
        if i >= MAX_FIGURES:
            body.append(f'<p class="note">{len(facets) - MAX_FIGURES} more figures left out; '
                        "report.json has every point</p>")
            break
        f = dict(zip(others, key, strict=True))
        slo_f = next((d["slo"] for d in cells if tuple(d["axes"][a] for a in others) == key),
                     None)
        body.append(img.add(f"curves_{i}.png", matrix_plots.plot_overlaid_curves(
            facets[key], ["ttft_p99_ms", "e2e_p99_ms"], slo_f, _facet_text(f)),
            f"latency vs load: {_facet_text(f)}"))
        curve_figs.append(f)
    if not facets:
        body.append("<p>No complete cell yet.</p>")
    data: dict[str, Any] = {"kind": "matrix", "experiment": exp.name, "file": str(exp.path),
                            "store": str(store.root), "generated_utc": now, "slo": slo,
                            "heatmap_axes": heatmap, "overlay": overlay, "cells": cells,
                            "excluded": [{"label": x.label, "reason": x.reason}
                                         for x in expansion.excluded],
                            "heatmaps": [{**h, "grid": [[None if not math.isfinite(v) else v
                                                         for v in row] for row in h["grid"]]}
                                         for h in heat]}
    if fits:
        body.append("<h2>Length-conditioned fits, side by side</h2>")
        body.append("<p>Median regression on each request's size, one run per cell (the run "
                    "at the knee, else the lowest rate), latency from the actual send (the "
                    "service's own costs): E2E = a + b x input tokens + c x output tokens, TTFT "
                    "= a + b x input tokens; 95 % bootstrap intervals in brackets. n/a: that "
                    "length did not vary in the run, so its coefficient is not identifiable.</p>")
        html_, labels, bars = _fits_html(cells, overlay)
        body.append(html_)
        if labels:
            body.append(img.add("fits.png", matrix_plots.plot_fit_bars(
                labels, bars, "fitted coefficients per cell"), "fitted coefficients"))
    body.append("<details><summary>experiment file</summary>"
                f"<pre>{_e(exp.text)}</pre></details>")
    data["images"] = sorted(img.items)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>" + "".join(body)
            + f'<p class="note">generated {_e(now)} by llm-loadgen; numbers in report.json; '
              f"runs in the catalog ({_e(store.catalog_path)})</p></body></html>")
    return page, data, img.items


def write_matrix_report(store, exp, expansion, output_dir: Path | None = None,
                        slo: dict[str, float] | None = None, heatmap: list[str] | None = None,
                        overlay: str = "runtime", fits: bool = True) -> Path:
    """Write report.html, report.json and the PNGs; return the HTML's path."""
    out = Path(output_dir) if output_dir else store.matrix_dir(exp.name) / "report"
    page, data, images = build_matrix_report(store, exp, expansion, slo, heatmap, overlay, fits)
    out.mkdir(parents=True, exist_ok=True)
    for name, png in images.items():
        (out / name).write_bytes(png)
    (out / "report.json").write_text(_dumps(data))
    (out / "report.html").write_text(page)
    return out / "report.html"
