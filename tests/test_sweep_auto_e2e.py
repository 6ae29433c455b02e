"""`loadgen sweep --rates auto` against the reference server, whose capacity is known.

The sim runs 4 sequences at once with 5 ms iterations and no per-sequence or prefill cost;
every request asks for exactly 10 tokens (ignore_eos), so each batch slot finishes one request
per 10 iterations: capacity = 4 / (10 x 5 ms) = 80 req/s. The saturation probe (a burst of
60) must find about that, and the sweep must then run the asked fractions of what it found.
"""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from analysis.sweep import round_rate
from servers.process import sim_server

pytestmark = pytest.mark.e2e
BATCH, STEP_S, OUT = 4, 0.005, 10
CAPACITY = BATCH / (OUT * STEP_S)  # 80 req/s
FRACTIONS = (0.25, 0.5)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auto")
    srv = sim_server(tmp / "sim.log", "--max-batch-size", str(BATCH), "--step-base-ms", "5",
                     "--step-per-seq-ms", "0", "--prefill-per-token-ms", "0").start(30)
    try:
        p = subprocess.run(
            [sys.executable, "-m", "loadgen", "sweep", "--base-url", srv.base_url,
             "--model", "sim-llm", "--rates", "auto", "--probe-requests", "60",
             "--auto-fractions", ",".join(map(str, FRACTIONS)), "--num-prompts", "20",
             "--random-input-len", "8", "--random-output-len", str(OUT), "--ignore-eos",
             "--result-dir", str(tmp), "--run-name", "sw", "--quiet", "--no-progress"],
            capture_output=True, text=True, timeout=180)
    finally:
        srv.stop()
    assert p.returncode in (0, 3), p.stderr
    return tmp / "sw", orjson.loads((tmp / "sw" / "sweep.json").read_bytes())


def test_the_probe_finds_the_sims_capacity(sweep):
    root, meta = sweep
    assert meta["config"]["mode"] == "auto" and meta["status"] == "complete"
    pr = meta["probe"]
    # completions come in groups of 4 every 50 ms, so the 10-90 % rate over 60 requests is
    # (53 - 6) / 0.6 s = 78.3 req/s on an exact clock; a busy machine only slows the server
    assert pr["saturation_rps"] == pytest.approx(CAPACITY, rel=0.2)
    probe = orjson.loads((root / "probe" / "summary.json").read_bytes())
    assert probe["counts"]["ok"] == 60 and probe["counts"]["failed"] == 0


def test_the_sweep_runs_the_fractions_of_what_the_probe_found(sweep):
    root, meta = sweep
    sat = meta["probe"]["saturation_rps"]
    rates = sorted(round_rate(f * sat) for f in FRACTIONS)
    assert meta["config"]["resolved_rates"] == rates
    assert [r["rate"] for r in meta["runs"]] == rates
    for r in meta["runs"]:
        s = orjson.loads((root / r["run_dir"] / "summary.json").read_bytes())
        assert s["counts"]["ok"] == 20
        assert r["check"]["saturated"] is False  # a quarter and half of capacity keep up
        assert 0.8 < r["check"]["throughput_ratio"] < 1.2
        m = orjson.loads((root / r["run_dir"] / "manifest.json").read_bytes())
        assert m["workload"]["request_rate"] == r["rate"]
