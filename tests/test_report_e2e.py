"""End to end: `loadgen sweep` against the reference server, `loadgen report` on the sweep,
`loadgen compare` on two of its runs, and the report opened in headless chromium (DevTools
protocol: every image decoded, no console errors, no network requests)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import orjson
import pytest

from analysis.report import write_report
from servers.process import sim_server

pytestmark = pytest.mark.e2e
LOADGEN = [sys.executable, "-m", "loadgen"]
RATES = [10.0, 20.0, 40.0]
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A 3-rate sweep (30 requests each) against a fast reference server."""
    tmp = tmp_path_factory.mktemp("sweep")
    srv = sim_server(tmp / "sim.log", "--step-base-ms", "2", "--max-batch-size", "8").start(30)
    try:
        p = subprocess.run(
            [*LOADGEN, "sweep", "--base-url", srv.base_url, "--model", "sim-llm",
             "--rates", ",".join(f"{r:g}" for r in RATES), "--num-prompts", "30",
             "--random-input-len", "32", "--random-output-len", "16",
             "--random-range-ratio", "0.9", "--result-dir", str(tmp), "--run-name", "sw",
             "--quiet", "--no-progress"],
            capture_output=True, text=True, timeout=120)
    finally:
        srv.stop()
    assert p.returncode in (0, 3), p.stderr
    return tmp / "sw"


def test_sweep_writes_one_run_per_rate_and_a_sweep_json(sweep_dir: Path):
    meta = orjson.loads((sweep_dir / "sweep.json").read_bytes())
    assert meta["status"] == "complete" and meta["stopped"]["early"] is False
    assert [r["rate"] for r in meta["runs"]] == RATES
    for r in meta["runs"]:
        s = orjson.loads((sweep_dir / r["run_dir"] / "summary.json").read_bytes())
        assert s["counts"]["ok"] == 30 and s["counts"]["failed"] == 0
        assert r["check"]["saturated"] is False  # ~100 req/s capacity: 40 req/s keeps up
        assert 0.85 < r["check"]["throughput_ratio"] < 1.15
        assert r["verdict"] == s["validity"]["verdict"]


@pytest.fixture(scope="module")
def report(sweep_dir: Path) -> Path:
    p = subprocess.run([*LOADGEN, "report", str(sweep_dir), "--slo",
                        "ttft_p90_ms=10000,e2e_p90_ms=10000"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return sweep_dir / "report" / "report.html"


def test_report_is_self_contained_and_its_json_matches_the_summaries(report: Path,
                                                                     sweep_dir: Path):
    page = report.read_text()
    data = orjson.loads((report.parent / "report.json").read_bytes())
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(imgs) == len(data["images"]) >= 2 + 3  # curves, throughput, 3 time series
    assert all(s.startswith("data:image/png;base64,") for s in imgs)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert all((report.parent / n).stat().st_size > 1000 for n in data["images"])
    pts = data["sweep"]["curves"]["points"]
    assert [p["rate"] for p in pts] == RATES
    for p, r in zip(pts, data["runs"], strict=True):
        s = orjson.loads((Path(r["run_dir"]) / "summary.json").read_bytes())
        assert p["ok"] == s["counts"]["ok"] == 30
        assert p["achieved_rps"] == pytest.approx(s["throughput"]["request_throughput"])
        # our exact order-statistic p50 agrees with the summary's HdrHistogram within 0.1 %
        assert p["latency_ms"]["e2e"]["p50"] == pytest.approx(
            s["latency_ms"]["from_intended"]["e2e"]["p50"], rel=2e-3)
        assert p["goodput_rps"] == pytest.approx(p["achieved_rps"])  # generous SLO: all good
    k = data["sweep"]["curves"]["knee"]
    assert k["rate"] == 40.0 and "every tested rate meets" in k["note"]


def test_compare_two_rates_of_the_sweep(sweep_dir: Path, tmp_path: Path):
    out = tmp_path / "cmp.json"
    p = subprocess.run([*LOADGEN, "compare", str(sweep_dir / "rate-10"),
                        str(sweep_dir / "rate-40"), "--bootstrap", "200", "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "TTFT" in p.stdout and "Mann-Whitney" in p.stdout
    c = orjson.loads(out.read_bytes())["comparisons"][0]
    assert c["overall"]["e2e"]["n_a"] == c["overall"]["e2e"]["n_b"] == 30
    assert c["same_work"]["workload_differences"]["request_rate"] == [10.0, 40.0]


# ---- length analysis: present (hand-made dict), raising, missing --------------------------

HANDMADE = {
    "window": {"start_s": 0.0, "end_s": 3.0},
    "percentiles_ci": {},
    "length_buckets": {
        "input_edges": [16, 32, 64], "output_edges": [8, 16, 32],
        "cells": [
            {"input_lo": 16, "input_hi": 32, "output_lo": 8, "output_hi": 16, "n": 7,
             "ttft_p50_ms": 4.5, "ttft_p99_ms": 9.0, "e2e_p50_ms": 30.0, "e2e_p99_ms": 41.0,
             "itl_p50_ms": 2.2, "itl_p99_ms": 4.0},
            {"input_lo": 32, "input_hi": 64, "output_lo": 16, "output_hi": 32, "n": 11,
             "ttft_p50_ms": 6.5, "ttft_p99_ms": 12.0, "e2e_p50_ms": 60.0, "e2e_p99_ms": 87.5,
             "itl_p50_ms": 2.4, "itl_p99_ms": 5.0},
        ],
    },
    "fits": {"e2e": {"a_ms": 3.25, "b_ms_per_input_token": 0.0625,
                     "c_ms_per_output_token": 2.5, "ci95": {"a_ms": [1.0, 5.0]}},
             "ttft": {"a_ms": 4.0, "b_ms_per_input_token": 0.03125,
                      "c_ms_per_output_token": None, "ci95": None}},
    "slo": None,
    "smoothness": {"cv": 0.1},
}


def _fake_module(monkeypatch, analyze) -> None:
    mod = types.ModuleType("analysis.run_analysis")
    mod.analyze = analyze
    monkeypatch.setitem(sys.modules, "analysis.run_analysis", mod)


def test_report_renders_heat_maps_and_fits_of_the_length_analysis(monkeypatch, sweep_dir,
                                                                   tmp_path):
    _fake_module(monkeypatch, lambda run, slo=None, window=None: HANDMADE)
    page = write_report(sweep_dir / "rate-10", output_dir=tmp_path).read_text()
    data = orjson.loads((tmp_path / "report.json").read_bytes())
    assert sorted(data["images"]) == ["heatmap_e2e_p99_ms.png", "heatmap_ttft_p50_ms.png",
                                      "timeseries.png"]
    la = data["runs"][0]["length_analysis"]
    assert la["available"] is True and la["fits"]["e2e"]["c_ms_per_output_token"] == 2.5
    assert "<td class=\"\">0.0625</td>" in page and "87.5" in page
    assert "length analysis unavailable" not in page


@pytest.mark.parametrize(("install", "reason"), [
    ("raise", "analyze() raised RuntimeError: boom"),
    ("missing", "ModuleNotFoundError"),
])
def test_report_still_renders_when_the_length_analysis_is_unavailable(monkeypatch, sweep_dir,
                                                                     tmp_path, install, reason):
    if install == "raise":
        def analyze(run, slo=None, window=None):
            raise RuntimeError("boom")
        _fake_module(monkeypatch, analyze)
    else:
        monkeypatch.setitem(sys.modules, "analysis.run_analysis", None)  # import fails
    page = write_report(sweep_dir / "rate-20", output_dir=tmp_path).read_text()
    assert "length analysis unavailable: " in page and reason in page
    data = orjson.loads((tmp_path / "report.json").read_bytes())
    assert data["runs"][0]["length_analysis"]["available"] is False
    assert data["images"] == ["timeseries.png"]
    assert data["runs"][0]["summary"]["counts"]["ok"] == 30


def test_report_without_an_slo_has_the_real_length_analysis_and_ttft_parts(sweep_dir, tmp_path):
    page = write_report(sweep_dir / "rate-40", output_dir=tmp_path / "run").read_text()
    data = orjson.loads((tmp_path / "run" / "report.json").read_bytes())
    la = data["runs"][0]["length_analysis"]
    assert la["available"] is True and la["slo"] is None
    assert la["fits"]["ttft"]["b_ms_per_input_token"] is not None
    assert sorted(data["images"]) == ["heatmap_e2e_p99_ms.png", "heatmap_ttft_p50_ms.png",
                                      "timeseries.png"]
    assert "length analysis unavailable" not in page and "SLO and goodput" not in page
    # the sim reports its timings: the TTFT decomposition is shown, its parts add to 100 %
    td = data["runs"][0]["summary"]["ttft_decomposition"]
    assert td["available"] and td["n_requests"] == 30
    assert "Where TTFT goes" in page and "server queue (server-reported)" in page
    page = write_report(sweep_dir, output_dir=tmp_path / "sweep").read_text()
    data = orjson.loads((tmp_path / "sweep" / "report.json").read_bytes())
    assert "No SLO given" in page and data["sweep"]["curves"]["knee"] is None
    assert all(r["length_analysis"]["available"] for r in data["runs"])


# ---- the browser -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing and we are root, else skip."""
    if not os.path.exists(CHROMIUM):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip(f"{CHROMIUM} missing and cannot install it (need root and apt-get): "
                        "apt-get install chromium")
        try:
            subprocess.run("apt-get update -qq && apt-get install -y -qq chromium", shell=True,
                           check=True, timeout=600, capture_output=True)
        except (subprocess.SubprocessError, OSError) as e:
            pytest.skip(f"could not install chromium with apt-get: {e}")
    return CHROMIUM


async def _inspect(port: int, url: str, shot: Path) -> dict:
    """Open url in the browser's page over the DevTools protocol; gather errors and images."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with http.ws_connect(ws_url, max_msg_size=0) as ws:
            ids = iter(range(1, 10**6))
            events: list[dict] = []

            async def call(method: str, **params) -> dict:
                i = next(ids)
                await ws.send_json({"id": i, "method": method, "params": params})
                while True:
                    msg = await ws.receive_json(timeout=30)
                    if msg.get("id") == i:
                        return msg.get("result", {})
                    events.append(msg)

            for domain in ("Runtime", "Log", "Page", "Network"):
                await call(f"{domain}.enable")
            await call("Page.navigate", url=url)
            deadline = time.monotonic() + 30
            while not any(e.get("method") == "Page.loadEventFired" for e in events):
                assert time.monotonic() < deadline, "page did not load in 30 s"
                events.append(await ws.receive_json(timeout=30))
            js = ("JSON.stringify({title: document.title, h1: document.querySelector('h1')"
                  ".textContent, imgs: Array.from(document.images).map(i => [i.complete, "
                  "i.naturalWidth, i.naturalHeight]), height: document.body.scrollHeight})")
            res = await call("Runtime.evaluate", expression=js, returnByValue=True)
            shotres = await call("Page.captureScreenshot", format="png")
            shot.write_bytes(base64.b64decode(shotres["data"]))
    errors = [e for e in events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled"
                  and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    requests = [e["params"]["request"]["url"] for e in events
                if e.get("method") == "Network.requestWillBeSent"]
    return {"page": orjson.loads(res["result"]["value"]), "errors": errors, "requests": requests}


def test_report_renders_in_headless_chromium(chromium: str, report: Path, tmp_path: Path):
    prof = tmp_path / "profile"
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={prof}", "--remote-debugging-port=0",
         "--window-size=1200,1600", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = prof / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, "chromium exited during start-up"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        shot = tmp_path / "report.png"
        got = asyncio.run(_inspect(port, report.as_uri(), shot))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    data = orjson.loads((report.parent / "report.json").read_bytes())
    page = got["page"]
    assert page["h1"] == "llm-loadgen sweep report: sw"
    assert len(page["imgs"]) == len(data["images"])
    assert all(c and w > 0 and h > 0 for c, w, h in page["imgs"]), page["imgs"]
    assert got["errors"] == []
    assert all(u.startswith(("file:", "data:")) for u in got["requests"]), got["requests"]
    assert shot.stat().st_size > 20_000 and page["height"] > 1000
    if os.environ.get("LOADGEN_REPORT_SCREENSHOT"):  # for a human to look at
        shutil.copy(shot, os.environ["LOADGEN_REPORT_SCREENSHOT"])
