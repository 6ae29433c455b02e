#!/usr/bin/env python3
"""Soak benchmark: a long steady load against the reference server; memory and send lag over time.

Design principle 4 (nothing is lost) and 6 (never the bottleneck), over a long run: does the
generator's memory stay flat, and does its send lag stay small, for 30 minutes at a steady
rate? One ``loadgen run`` process sends an open-loop Poisson load to the reference server
(``python -m servers.sim``) on 127.0.0.1 for ``--duration-s`` seconds (default 1800). Every
``--sample-s`` seconds the script reads the resident memory (RSS) of the generator (with its
children) and of the server from /proc (psutil); after the run it reads the run directory and
reports, per ``--window-s`` window: requests sent, ok and failed, send lag p50/p99/max (from
requests.parquet), the event loop's worst lag (timeseries.parquet), and the memory samples.

The verdict (printed, and stored in the JSON):

    memory flat  <=>  mean generator RSS of the last window <= that of the second window
                      (after start-up) + max(10 MiB, 5 %)
    lag small    <=>  send-lag p99 of every window < 5 ms (loadgen's validity threshold)

Bounded: the load ends after --duration-s (plus the run's own drain); the script kills the
generator if it is still running --grace-s (default 120 s) after that, and stops the server
by its PID, also on Ctrl-C or an error. Run from the repository root, ideally niced:

    nice -n 10 .venv/bin/python benchmarks/soak.py                       # 30 minutes
    .venv/bin/python benchmarks/soak.py --duration-s 60 --window-s 10     # a quick check

Output: a table on stdout and benchmarks/results/soak-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402

from servers.process import sim_server  # noqa: E402

LAG_LIMIT_MS = 5.0


def rss_bytes(pid: int) -> float:
    """Resident memory of ``pid`` and its children (bytes); NaN once it has exited."""
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return math.nan
    tot = 0
    for q in procs:
        try:
            tot += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return float(tot)


def windows(run_dir: Path, samples: list[dict], window_s: float, duration_s: float) -> list[dict]:
    """Per-window figures from the run directory and the memory samples (pure but for reads)."""
    import pyarrow.parquet as pq

    t = pq.read_table(run_dir / "requests.parquet",
                      columns=["t_intended", "t_sent", "status"]).to_pydict()
    t_int = np.asarray(t["t_intended"], dtype=float)
    t_sent = np.asarray(t["t_sent"], dtype=float)
    ok = np.asarray(t["status"]) == "ok"
    ts_path = run_dir / "timeseries.parquet"
    ts = pq.read_table(ts_path).to_pydict() if ts_path.exists() else {"t": [], "loop_lag_max_ms": []}
    ts_t, ts_lag = np.asarray(ts["t"], float), np.asarray(ts["loop_lag_max_ms"], float)
    st = np.asarray([s["t"] for s in samples], float)
    gen = np.asarray([s["gen_rss"] for s in samples], float)
    srv = np.asarray([s["server_rss"] for s in samples], float)
    out = []
    for a in np.arange(0.0, duration_s, window_s):
        b = a + window_s
        m = (t_int >= a) & (t_int < b)
        lag = (t_sent[m] - t_int[m]) * 1e3
        lag = lag[np.isfinite(lag)]
        mm = (st >= a) & (st < b)
        ml = (ts_t >= a) & (ts_t < b)
        q = lambda x, p: float(np.percentile(x, p)) if x.size else math.nan  # noqa: E731
        out.append({
            "t0_s": float(a), "t1_s": float(b), "sent": int(lag.size), "ok": int(ok[m].sum()),
            "failed": int((~ok[m]).sum()),
            "lag_p50_ms": q(lag, 50), "lag_p99_ms": q(lag, 99),
            "lag_max_ms": float(lag.max()) if lag.size else math.nan,
            "loop_lag_max_ms": float(np.nanmax(ts_lag[ml])) if ml.any() else math.nan,
            "gen_rss_mib": float(np.nanmean(gen[mm]) / 2**20) if mm.any() else math.nan,
            "server_rss_mib": float(np.nanmean(srv[mm]) / 2**20) if mm.any() else math.nan,
        })
    return out


def verdict(rows: list[dict]) -> dict:
    rss = [r["gen_rss_mib"] for r in rows if math.isfinite(r["gen_rss_mib"])]
    base = rss[1] if len(rss) > 1 else (rss[0] if rss else math.nan)
    last = rss[-1] if rss else math.nan
    flat = bool(last <= base + max(10.0, 0.05 * base)) if rss else False
    worst = max((r["lag_p99_ms"] for r in rows if math.isfinite(r["lag_p99_ms"])), default=math.nan)
    return {"memory_flat": flat, "gen_rss_second_window_mib": base, "gen_rss_last_window_mib": last,
            "lag_small": bool(worst < LAG_LIMIT_MS), "worst_window_lag_p99_ms": worst,
            "failed": sum(r["failed"] for r in rows)}


def render(rows: list[dict]) -> str:
    head = (f"{'t (s)':>11} {'sent':>6} {'ok':>6} {'fail':>5} {'lag p50':>8} {'lag p99':>8} "
            f"{'lag max':>8} {'loop max':>9} {'gen MiB':>8} {'srv MiB':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['t0_s']:>5.0f}-{r['t1_s']:<5.0f} {r['sent']:>6} {r['ok']:>6} {r['failed']:>5} "
                     f"{r['lag_p50_ms']:>8.3f} {r['lag_p99_ms']:>8.3f} {r['lag_max_ms']:>8.2f} "
                     f"{r['loop_lag_max_ms']:>9.2f} {r['gen_rss_mib']:>8.1f} {r['server_rss_mib']:>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=1800.0)
    ap.add_argument("--rate", type=float, default=10.0, help="requests/s (default 10)")
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--sample-s", type=float, default=5.0, help="memory sampling interval")
    ap.add_argument("--window-s", type=float, default=60.0, help="reporting window")
    ap.add_argument("--grace-s", type=float, default=120.0)
    ap.add_argument("--result-dir", default=None, help="where the run directory goes (default: a temp dir)")
    ap.add_argument("--output", default=None, help="JSON result (default benchmarks/results/soak-<time>.json)")
    ns = ap.parse_args(argv)

    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    work = Path(ns.result_dir or tempfile.mkdtemp(prefix="loadgen-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    n = int(round(ns.rate * ns.duration_s))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    samples: list[dict] = []
    srv = sim_server(work / "sim.log", "--max-batch-size", "64").start(timeout_s=60)
    gen = None
    try:
        argv_run = [sys.executable, "-m", "loadgen", "run", "--base-url", srv.base_url,
                    "--model", "sim-llm", "--request-rate", str(ns.rate), "--num-prompts", str(n),
                    "--random-input-len", str(ns.input_len), "--random-output-len",
                    str(ns.output_len), "--ignore-eos", "--timeout", "60", "--seed", "0",
                    "--result-dir", str(work), "--run-name", "soak", "--no-progress"]
        # stdout/stderr to files: a pipe nobody reads until the end would block the generator
        # once its summary (tens of KB) fills the pipe buffer
        out_f, err_f = open(work / "run.out", "wb"), open(work / "run.err", "wb")  # noqa: SIM115
        gen = subprocess.Popen(argv_run, stdout=out_f, stderr=err_f, env=env, cwd=REPO)
        run_dir = work / "soak"
        while not (run_dir / "manifest.json").exists() and gen.poll() is None:
            time.sleep(0.1)
        t_start = time.monotonic()
        deadline = t_start + ns.duration_s + ns.grace_s
        while gen.poll() is None and time.monotonic() < deadline:
            samples.append({"t": time.monotonic() - t_start, "gen_rss": rss_bytes(gen.pid),
                            "server_rss": rss_bytes(srv.proc.pid)})
            time.sleep(ns.sample_s)
        if gen.poll() is None:
            gen.kill()
        gen.wait(60)
        out_f.close()
        err_f.close()
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
            gen.wait(10)
        srv.stop()
    if gen.returncode not in (0, 3):
        print((work / "run.err").read_text(errors="replace")[-2000:], file=sys.stderr)
    sj = run_dir / "summary.json"
    summary = orjson.loads(sj.read_bytes()) if sj.exists() else {}
    rows = windows(run_dir, samples, ns.window_s, ns.duration_s)
    v = verdict(rows)
    result = {"benchmark": "soak", "utc": stamp, "config": vars(ns), "requests": n,
              "exit_code": gen.returncode, "run_dir": str(run_dir),
              "run_verdict": summary.get("validity", {}).get("verdict"),
              "send_lag_ms": summary.get("self_check", {}).get("send_lag_ms"),
              "counts": summary.get("counts"), "windows": rows, "verdict": v,
              "samples": samples}
    path = Path(ns.output or REPO / "benchmarks" / "results" / f"soak-{stamp}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print(f"soak: {n} requests at {ns.rate:g} req/s over {ns.duration_s:g} s "
          f"(exit {gen.returncode}, run {result['run_verdict']})")
    print(render(rows))
    print(f"memory flat: {v['memory_flat']} (generator {v['gen_rss_second_window_mib']:.1f} -> "
          f"{v['gen_rss_last_window_mib']:.1f} MiB); send-lag p99 < {LAG_LIMIT_MS:g} ms in every "
          f"window: {v['lag_small']} (worst {v['worst_window_lag_p99_ms']:.3f} ms); "
          f"failed: {v['failed']}")
    print(f"result: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
