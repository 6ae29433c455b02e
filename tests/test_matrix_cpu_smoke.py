"""experiments/cpu-smoke.toml end to end: `loadgen matrix run` over the five runtimes (the
reference server, llama.cpp's llama-server, the PyTorch server, vLLM's CPU build, Triton behind
its OpenAI gateway) x batch {1, 4} x {ShareGPT, Alpaca} on tiny models, then the catalog and
the matrix report. Bounded: 8 requests per rate, 2 rates per cell; about 3-4 minutes on 2
cores (vLLM starts in about 40 s, twice).
The dataset samples are read from /work/shared/data (or $LOADGEN_DATA_DIR)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from analysis import catalog
from loadgen.matrix.cells import expand
from loadgen.matrix.commands import runtime_status
from loadgen.matrix.spec import load_experiment
from loadgen.matrix.store import Store

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
FILE = ROOT / "experiments" / "cpu-smoke.toml"
DATA = Path(os.environ.get("LOADGEN_DATA_DIR") or "/work/shared/data")
SAMPLES = ("sharegpt/ShareGPT_V3_filtered_500.json", "alpaca/alpaca_data_records1-1727.json")


@pytest.fixture(scope="module")
def llama_server() -> Path:
    """The cached llama-server (built here, with progress, on a machine's first use)."""
    from servers.llamacpp.build import ensure_llama_server

    return ensure_llama_server(progress=lambda m: print(m, flush=True), timeout_s=25 * 60)


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    """The cached vLLM CPU build (installed here, with progress, on a machine's first use:
    about 3 minutes; what the file's prepare = true would do inside the matrix)."""
    from servers.vllm.install import ensure_vllm_python

    return ensure_vllm_python(progress=lambda m: print(m, flush=True), timeout_s=30 * 60)


@pytest.fixture(scope="module")
def triton_dist():
    """The cached Triton server (installed on a machine's first use: about 15 s)."""
    from servers.triton.dist import ensure_triton

    return ensure_triton(install=True)


def test_cpu_smoke_runs_unattended_and_produces_the_catalog_and_the_report(
        tmp_path, llama_server, vllm_python, triton_dist):
    for s in SAMPLES:
        if not (DATA / s).exists():
            pytest.skip(f"dataset sample {DATA / s} is absent (see /work/shared/data/README.md)")
    pytest.importorskip("gguf")
    pytest.importorskip("torch")  # the tiny HF model of the PyTorch and vLLM cells
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "LOADGEN_DATA_DIR": str(DATA)}
    r = subprocess.run([sys.executable, "-m", "loadgen", "matrix", "run", str(FILE), "--store",
                        str(store)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]

    x = expand(load_experiment(FILE))
    avail = runtime_status(x)
    s = Store(store)
    ran = set()
    for c in x.cells:
        rec = s.read_cell(c.id)
        rt = c.axes["runtime"]
        if avail[rt]["available"]:
            assert rec["status"] == "complete", (c.label, rec.get("cause"))
            ran.add(rt)
        else:  # not installed here: skipped, and the cell says why
            assert rec["status"] == "skipped" and rt in rec["cause"], (c.label, rec)
    assert ran == {"sim", "llamacpp", "pytorch", "vllm", "triton"}

    _, rows = catalog.query(store, "SELECT runtime, count(*), count(DISTINCT dataset), "
                            "count(DISTINCT batch_size), sum(failed), min(ok) FROM latest "
                            "GROUP BY runtime ORDER BY runtime")
    assert {row[0] for row in rows} == ran
    for runtime, n, datasets, batches, failed, min_ok in rows:
        # 2 batch sizes x 2 workloads x 2 rates, every request answered
        assert (n, datasets, batches, failed, min_ok) == (8, 2, 2, 0, 8), runtime
    _, rows = catalog.query(store, "SELECT json_extract(manifest, '$.server_launch.argv') FROM "
                            "latest WHERE runtime = 'llamacpp' AND batch_size = 4 LIMIT 1")
    argv = orjson.loads(rows[0][0])
    assert argv[argv.index("-np") + 1] == "4"  # the batch-size axis reached the server

    report = store / "matrices" / "cpu-smoke" / "report"
    data = orjson.loads((report / "report.json").read_bytes())
    assert len(data["cells"]) == len(x.cells) and len(data["heatmaps"]) == 2  # one per workload
    html = (report / "report.html").read_text()
    assert "Capacity at the SLO" in html and "Length-conditioned fits" in html
    for c in data["cells"]:
        if c["status"] == "complete":
            assert [p["rate"] for p in c["points"]] == [2.0, 5.0]
            assert c["fit"]["varies"]["input"] is True  # dataset prompts vary in length
