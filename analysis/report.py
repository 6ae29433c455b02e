"""One self-contained HTML report of a run or a sweep (docs/report.md).

``write_report(DIR)`` writes, into DIR/report/ by default:
  report.html   one file: inline CSS, PNGs embedded as base64 data URIs, no JavaScript at all,
                so it opens offline, from a mail attachment as well as from disk
  report.json   every number the HTML shows, machine-readable
  *.png         the same plots as files
Per-run length-conditioned numbers come from ``analysis.run_analysis.analyze`` when that module
is present and works; otherwise the report says why that section is missing and renders the rest.
"""

from __future__ import annotations

import base64
import html
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from analysis import plots
from analysis.curves import METRIC_LABEL, curves_of, run_point
from analysis.load import Run, load_run
from analysis.summary import summarize
from analysis.sweep import is_sweep, load_sweep

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.verdict { display: inline-block; padding: .3em .8em; border-radius: .3em; font-weight: bold;
           color: white; }
.VALID { background: #2a7d2a; } .INVALID { background: #b22; } .PARTIAL { background: #c80; }
.note { color: #555; } .warn { color: #b22; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .8em; }
details { margin: .5em 0; } summary { cursor: pointer; font-weight: bold; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return _e(x)


def _table(head: list[str], rows: list[list[Any]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>'
                         for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


class _Images:
    """PNGs: kept as bytes for the files and embedded as data URIs in the HTML."""

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    def add(self, name: str, png: bytes, alt: str) -> str:
        self.items[name] = png
        b64 = base64.b64encode(png).decode()
        return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{b64}"></p>'


def length_analysis(run: Run) -> dict[str, Any]:
    """``analysis.run_analysis.analyze(run)`` if it is there and works, else why not."""
    try:
        from analysis.run_analysis import analyze
    except Exception as e:  # noqa: BLE001 - the module is optional; say why it is missing
        return {"available": False, "reason": f"{type(e).__name__}: {e}"}
    try:
        return {"available": True, "result": analyze(run, slo=None, window=None)}
    except Exception as e:  # noqa: BLE001 - report the failure, render everything else
        return {"available": False, "reason": f"analyze() raised {type(e).__name__}: {e}"}


def _summary_html(s: dict[str, Any]) -> str:
    v = s["validity"]
    parts = [f'<p><span class="verdict {_e(v["verdict"])}">{_e(v["verdict"])}</span> '
             f'{_e(s["mode"])}, status {_e(s["status"])}</p>']
    parts += [f'<p class="warn">! {_e(r)}</p>' for r in v["reasons"]]
    parts += [f'<p class="note">note: {_e(n)}</p>' for n in v["notes"]]
    c, tp = s["counts"], s["throughput"]
    parts.append(_table(
        ["intended", "sent", "ok", "failed", "duration s", "intended rate", "achieved send rate",
         "ok req/s", "output tok/s"],
        [[c["intended"], c["sent"], c["ok"], c["failed"], _f(tp["duration_s"], 2),
          _f(tp["intended_rate"], 2), _f(tp["achieved_send_rate"], 2),
          _f(tp["request_throughput"], 2), _f(tp["output_token_throughput"], 1)]], left=0))
    keys = ("mean", "p50", "p90", "p99", "p99.9", "max", "count")
    lat = s["latency_ms"]
    rows = [("TTFT from intended", lat["from_intended"]["ttft"]),
            ("TTFT from sent", lat["from_sent"]["ttft"]),
            ("E2E from intended", lat["from_intended"]["e2e"]),
            ("E2E from sent", lat["from_sent"]["e2e"]),
            ("TPOT", lat["from_sent"]["tpot"]), ("ITL (per chunk)", lat["from_sent"]["itl"]),
            ("send lag (generator)", s["self_check"]["send_lag_ms"])]
    per_chunk = s["tokens"].get("per_chunk") or {}
    if lat["from_sent"].get("itl_per_token") is not None:
        label = "ITL (per token, estimated)" if per_chunk.get("estimated") else "ITL (per token)"
        rows.insert(6, (label, lat["from_sent"]["itl_per_token"]))
    parts.append(_table(["latency (ms)", *keys],
                        [[_e(n), *(_f(d.get(k), 2) for k in keys)] for n, d in rows]))
    if per_chunk:
        parts.append(f'<p class="note">tokens per chunk: {per_chunk.get("server", 0)} requests '
                     f'counted by the server, {per_chunk.get("estimated", 0)} estimated, '
                     f'{per_chunk.get("one_per_chunk", 0)} one per chunk</p>')
    if per_chunk.get("note"):
        parts.append(f'<p class="warn">! {_e(per_chunk["note"])}</p>')
    return "".join(parts)


def _ttft_html(s: dict[str, Any]) -> str:
    """summary.json's ttft_decomposition as a table, or why there is none."""
    td = s.get("ttft_decomposition") or {}
    if not td.get("available"):
        return f'<p class="note">no decomposition: {_e(td.get("reason", "not computed"))}</p>'
    names = {"generator_lag": "generator lag (t_sent - t_intended)",
             "server_queue": "server queue (server-reported)",
             "server_prefill": "server prefill (server-reported)",
             "transport_other": "transport / other (remainder)"}
    rows = [[_e(names[k]), _f(c["mean"], 2), _f((c["share_of_mean_ttft"] or 0) * 100, 1),
             _f(c["p50"], 2), _f(c["p90"], 2), _f(c["p99"], 2)]
            for k, c in td["components_ms"].items()]
    t = td["ttft_intended_ms"]
    rows.append(["<b>TTFT from intended</b>", _f(t["mean"], 2), "100.0", _f(t["p50"], 2),
                 _f(t["p90"], 2), _f(t["p99"], 2)])
    out = (f"<p>{td['n_requests']} of {td['n_ok']} ok requests carry server timings; the "
           "components add up to each request's TTFT (means add up; percentiles do not).</p>"
           + _table(["component", "mean ms", "% of mean", "p50", "p90", "p99"], rows))
    if td.get("note"):
        out += f'<p class="note">note: {_e(td["note"])}</p>'
    return out


def _selfcheck_html(s: dict[str, Any]) -> str:
    sc = s["self_check"]
    ll = sc.get("event_loop_lag_ms") or {}
    cpu = sc.get("client_cpu") or {}
    ks = sc.get("interarrival_ks") or {}
    rows = [
        ["send lag p99 (ms)", _f(s["validity"].get("send_lag_p99_ms"), 3),
         f"threshold {_f(s['validity'].get('max_send_lag_ms'), 1)} ms"],
        ["event-loop lag p99 / max (ms)", f"{_f(ll.get('p99'), 2)} / {_f(ll.get('max'), 2)}",
         "how late a 10 ms timer fires"],
        ["client CPU (s, share of one core)",
         f"{_f(cpu.get('cpu_s'), 2)} ({_f((cpu.get('utilisation') or 0) * 100, 1)} %)",
         f"{_f(cpu.get('us_per_request'), 0)} us/request"],
        ["inter-arrival KS p", _f(ks.get("pvalue"), 3),
         f"CV intended {_f(ks.get('cv_intended'), 2)}, realised {_f(ks.get('cv_realised'), 2)}"],
    ]
    return _table(["generator self-check", "value", ""], rows)


def _errors_html(s: dict[str, Any]) -> str:
    errs = s["errors"]
    if not errs["by_status"]:
        return "<p>No failed requests.</p>"
    rows = [[_e(k), n, f'<code>{_e(str(errs["examples"].get(k))[:300])}</code>']
            for k, n in sorted(errs["by_status"].items(), key=lambda kv: -kv[1])]
    return _table(["cause", "requests", "example"], rows)


def _length_html(la: dict[str, Any], img: _Images, prefix: str) -> tuple[str, dict[str, Any]]:
    """Heat maps and fits from analyze(); any shape problem becomes the 'unavailable' reason."""
    if not la["available"]:
        return (f'<p class="warn">length analysis unavailable: {_e(la["reason"])}</p>',
                {"available": False, "reason": la["reason"]})
    r = la["result"]
    try:
        parts = []
        lb = r["length_buckets"]
        for key, title in (("ttft_p50_ms", "TTFT p50 (ms) by input x output length"),
                           ("e2e_p99_ms", "E2E p99 (ms) by input x output length")):
            parts.append(img.add(f"{prefix}heatmap_{key}.png",
                                 plots.plot_heatmap(lb, key, title), title))
        rows = []
        for name, fit in (r.get("fits") or {}).items():
            if not isinstance(fit, dict):
                continue
            rows.append([_e(name), _f(fit.get("a_ms"), 2), _f(fit.get("b_ms_per_input_token"), 4),
                         _f(fit.get("c_ms_per_output_token"), 4),
                         f'<code>{_e(orjson.dumps(fit.get("ci95")).decode())}</code>'])
        if rows:
            parts.append("<p>Fitted latency = a + b x input tokens + c x output tokens:</p>")
            parts.append(_table(["fit", "a (ms)", "b (ms/input tok)", "c (ms/output tok)",
                                 "95 % CI"], rows))
        cell_rows = [[f'{c["input_lo"]}-{c["input_hi"]}', f'{c["output_lo"]}-{c["output_hi"]}',
                      c["n"], _f(c.get("ttft_p50_ms")), _f(c.get("ttft_p99_ms")),
                      _f(c.get("e2e_p50_ms")), _f(c.get("e2e_p99_ms")), _f(c.get("itl_p50_ms")),
                      _f(c.get("itl_p99_ms")), _f(c.get("itl_token_p50_ms")),
                      _f(c.get("itl_token_p99_ms"))] for c in lb["cells"]]
        parts.append("<details><summary>length bucket table</summary>" + _table(
            ["input tokens", "output tokens", "n", "TTFT p50", "TTFT p99", "E2E p50", "E2E p99",
             "ITL p50 (chunk)", "ITL p99 (chunk)", "ITL p50 (token)", "ITL p99 (token)"],
            cell_rows, left=2) + "</details>")
        extra = {k: r.get(k) for k in ("window", "slo", "smoothness", "percentiles_ci") if k in r}
        if extra:
            parts.append("<details><summary>window, SLO, smoothness, percentile CIs</summary>"
                         f"<pre>{_e(_dumps(extra))}</pre></details>")
        return "".join(parts), {"available": True, **r}
    except Exception as e:  # noqa: BLE001 - a shape we did not expect must not kill the report
        reason = f"could not render analyze()'s result: {type(e).__name__}: {e}"
        return (f'<p class="warn">length analysis unavailable: {_e(reason)}</p>',
                {"available": False, "reason": reason})


def _slo_html(point: dict[str, Any]) -> str:
    rows = [[_e(k), _f(c["threshold_ms"]), _f(c["value_ms"]),
             f"[{_f(c['ci'][0])}, {_f(c['ci'][1])}]",
             "yes" if c["meets"] else '<span class="warn">no</span>']
            for k, c in point["slo_checks"].items()]
    return (_table(["SLO", "threshold ms", "value ms", "95 % CI", "met"], rows)
            + f"<p>goodput {_f(point['goodput_rps'], 2)} req/s: {point['good']} of "
              f"{point['ok']} ok requests within every threshold "
              f"({_f(point['good_fraction'] * 100, 1)} %)</p>")


def _dumps(x: Any) -> str:
    return orjson.dumps(x, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                        | orjson.OPT_NON_STR_KEYS, default=str).decode()


def _run_section(run: Run, img: _Images, prefix: str, slo: dict | None, rate: float | None
                 ) -> tuple[str, dict[str, Any]]:
    s = summarize(run)
    s.pop("histograms", None)
    point = run_point(run, rate, slo)
    la = length_analysis(run)
    data: dict[str, Any] = {"run_dir": str(run.path), "summary": s, "point": point}
    parts = ["<h3>Validity and generator self-check</h3>", _summary_html(s), _selfcheck_html(s),
             "<h3>Where TTFT goes</h3>", _ttft_html(s)]
    if slo:
        parts += ["<h3>SLO and goodput</h3>", _slo_html(point)]
    parts.append("<h3>Length-conditioned latency</h3>")
    lhtml, data["length_analysis"] = _length_html(la, img, prefix)
    parts.append(lhtml)
    parts.append("<h3>Time series</h3>")
    parts.append(img.add(f"{prefix}timeseries.png", plots.plot_timeseries(run),
                         "offered vs achieved rate, in flight, latency over time"))
    parts += ["<h3>Errors by cause</h3>", _errors_html(s)]
    parts.append("<details><summary>manifest.json</summary>"
                 f"<pre>{_e(_dumps(run.manifest))}</pre></details>")
    return "".join(parts), data


def _curves_html(c: dict[str, Any]) -> str:
    head = ["offered req/s", "achieved req/s", "ok", "failed"]
    for m in ("ttft", "itl", "e2e", "norm"):
        head += [f"{METRIC_LABEL[m]} p50", "p90", "p99"]
    if c.get("slo"):
        head += ["goodput req/s"]
    rows = []
    for p in c["points"]:
        row = [_f(p["rate"], 3), _f(p["achieved_rps"], 2), p["ok"], p["failed"]]
        for m in ("ttft", "itl", "e2e", "norm"):
            row += [_f(p["latency_ms"][m][k]) for k in ("p50", "p90", "p99")]
        if c.get("slo"):
            row.append(_f(p["goodput_rps"], 2))
        rows.append(row)
    return _table(head, rows, left=0)


def build_report(path: Path, slo: dict[str, float] | None = None
                 ) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    """(html, report.json content, PNGs by file name) for a run or sweep directory."""
    img = _Images()
    now = datetime.now(UTC).isoformat()
    data: dict[str, Any] = {"kind": None, "path": str(path), "generated_utc": now, "slo": slo}
    body: list[str] = []
    if is_sweep(path):
        sw = load_sweep(path)
        if not sw.runs:
            raise ValueError(f"{path}: the sweep has no finished runs to report")
        data["kind"] = "sweep"
        c = curves_of(sw, slo)
        data["sweep"] = {"meta": sw.meta, "curves": c}
        title = f"llm-loadgen sweep report: {path.name}"
        body.append(f"<h1>{_e(title)}</h1>")
        cfg = sw.meta.get("config", {})
        body.append(f"<p>{_e(cfg.get('base_url'))}, model {_e(cfg.get('model'))}; status "
                    f"<b>{_e(sw.meta.get('status'))}</b>; {len(sw.runs)} rates</p>")
        verdicts = [summarize_verdict(r) for r in sw.runs]
        bad = [f"{r:g}" for r, v in zip(sw.rates, verdicts, strict=True) if v != "VALID"]
        body.append(f'<p><span class="verdict {"VALID" if not bad else "INVALID"}">'
                    f'{"all runs VALID" if not bad else "not all runs VALID"}</span>'
                    + (f' <span class="warn">not VALID at rates {", ".join(bad)}</span>'
                       if bad else "") + "</p>")
        st = sw.meta.get("stopped") or {}
        if st.get("early"):
            body.append(f'<p class="warn">stopped early at {_e(st["at_rate"])} req/s: '
                        f'{_e("; ".join(st["reasons"]))}; skipped {_e(st.get("skipped_rates"))}'
                        "</p>")
        if sw.meta.get("probe"):
            pr = sw.meta["probe"]
            body.append(f"<p>saturation probe: {_e(pr['requests'])} requests at rate "
                        f"{_e(pr['rate'])}; {_e(pr['method'])}: "
                        f"<b>{_f(pr['saturation_rps'], 2)} req/s</b></p>")
        body.append("<h2>Latency vs load</h2>")
        body.append("<p>Latency from each request's intended send time; bars are 95 % "
                    "order-statistic confidence intervals.</p>")
        body.append(img.add("curves.png", plots.plot_curves(c), "latency vs throughput"))
        body.append(_curves_html(c))
        body.append("<h2>Throughput, SLO and goodput</h2>")
        body.append(img.add("throughput.png", plots.plot_throughput(c), "throughput vs offered"))
        k = c.get("knee")
        if k:
            body.append(f"<p>SLO {_e(slo)}: knee at <b>{_f(k['rate'], 3)} req/s</b> offered "
                        f"(achieved {_f(k.get('achieved_rps'), 2)} req/s), interval "
                        f"[{_f(k['low'], 3)}, {_f(k['high'], 3)}): {_e(k['note'])}</p>")
        else:
            body.append('<p class="note">No SLO given (--slo ttft_p99_ms=...,e2e_p99_ms=...): '
                        "no knee or goodput.</p>")
        data["runs"] = []
        for rate, run in zip(sw.rates, sw.runs, strict=True):
            html_, d = _run_section(run, img, f"rate-{rate:g}_", slo, rate)
            data["runs"].append({"rate": rate, **d})
            body.append(f"<details><summary>rate {rate:g} req/s: {_e(run.path.name)} "
                        f"({_e(d['summary']['validity']['verdict'])})</summary>{html_}</details>")
        body.append("<details><summary>sweep.json</summary>"
                    f"<pre>{_e(_dumps(sw.meta))}</pre></details>")
    else:
        run = load_run(path)
        data["kind"] = "run"
        title = f"llm-loadgen run report: {path.name}"
        body.append(f"<h1>{_e(title)}</h1>")
        html_, d = _run_section(run, img, "", slo, _rate(run))
        data["runs"] = [d]
        body.append(html_)
    data["images"] = sorted(img.items)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            + "".join(body)
            + f'<p class="note">generated {_e(now)} by llm-loadgen; numbers in report.json</p>'
            "</body></html>")
    return page, data, img.items


def summarize_verdict(run: Run) -> str:
    sj = run.path / "summary.json"
    if sj.exists():
        return orjson.loads(sj.read_bytes())["validity"]["verdict"]
    return summarize(run)["validity"]["verdict"]


def _rate(run: Run) -> float | None:
    try:
        r = float(run.manifest.get("workload", {}).get("request_rate"))
    except (TypeError, ValueError):
        return None
    return None if math.isinf(r) else r


def write_report(path: Path, output_dir: Path | None = None,
                 slo: dict[str, float] | None = None) -> Path:
    """Write report.html, report.json and the PNGs; return the HTML's path."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a run or sweep directory")
    out = Path(output_dir) if output_dir else path / "report"
    page, data, images = build_report(path, slo)
    out.mkdir(parents=True, exist_ok=True)
    for name, png in images.items():
        (out / name).write_bytes(png)
    (out / "report.json").write_text(_dumps(data))
    (out / "report.html").write_text(page)
    return out / "report.html"
