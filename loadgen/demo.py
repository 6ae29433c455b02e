"""``loadgen demo``: the reference server, a short open-loop load at a few rates, a report.

Everything runs on 127.0.0.1 and nothing is downloaded. The reference server's default cost
model (servers/sim/model.py) saturates at roughly 20 requests/s for this workload (256 input,
64 output tokens), so the default rates walk from light load into overload.
"""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from analysis.table import render_summary
from arrivals.workload import synthetic_workload
from loadgen.clients.openai import ClientConfig
from loadgen.run import EXIT_ERROR, RunSpec, execute
from servers.process import ServerStartError, sim_server

INPUT_LEN, OUTPUT_LEN, SECONDS_PER_RATE = 256, 64, 8.0


def parse_rates(s: str) -> list[float]:
    try:
        rates = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"loadgen demo: --rates must be comma-separated numbers, got {s!r}") from None
    if not rates or any(not (r > 0) or r == float("inf") for r in rates):
        raise SystemExit(f"loadgen demo: --rates must be positive finite numbers, got {s!r}")
    return rates


def sweep_table(rows: list[dict]) -> str:
    head = (f"{'rate':>6} {'achieved':>9} {'ok':>5} {'fail':>5} {'TTFT p50':>9} {'TTFT p99':>9} "
            f"{'ITL p50':>8} {'ITL p99':>8} {'E2E p50':>8} {'E2E p99':>8} {'lag p99':>8}  verdict")
    out = ["latency in ms, measured from each request's intended send time (what a user sees)",
           head, "-" * len(head)]
    for r in rows:
        s = r["summary"]
        li, ls = s["latency_ms"]["from_intended"], s["latency_ms"]["from_sent"]
        f = lambda d, k: f"{d.get(k, float('nan')):.1f}"  # noqa: E731
        out.append(
            f"{r['rate']:>6g} {s['throughput']['request_throughput']:>9.2f} {s['counts']['ok']:>5} "
            f"{s['counts']['failed']:>5} {f(li['ttft'], 'p50'):>9} {f(li['ttft'], 'p99'):>9} "
            f"{f(ls['itl'], 'p50'):>8} {f(ls['itl'], 'p99'):>8} {f(li['e2e'], 'p50'):>8} "
            f"{f(li['e2e'], 'p99'):>8} {s['self_check']['send_lag_ms'].get('p99', float('nan')):>8.2f}  "
            f"{s['validity']['verdict']}"
        )
    return "\n".join(out)


def _sigterm_exits(signum: int, frame: object) -> None:
    raise SystemExit(143)  # unwinds the ``with`` below, which stops the server


def demo(ns: argparse.Namespace) -> int:
    """Run the demo; Ctrl-C or SIGTERM stops it (the partial run is saved, the server stopped)."""
    previous = signal.signal(signal.SIGTERM, _sigterm_exits)
    try:
        return _demo(ns)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _demo(ns: argparse.Namespace) -> int:
    rates = parse_rates(ns.rates)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = Path(ns.result_dir) / f"demo-{stamp}"
    root.mkdir(parents=True, exist_ok=False)
    print(f"starting the reference server (log: {root / 'server.log'}) ...", file=sys.stderr)
    rows: list[dict] = []
    try:
        with sim_server(root / "server.log", "--seed", str(ns.seed)) as srv:
            print(f"reference server at {srv.base_url}", file=sys.stderr)
            for rate in rates:
                n = ns.num_prompts or max(8, int(rate * SECONDS_PER_RATE))
                print(f"\n--- rate {rate:g} req/s, {n} requests (Poisson, {INPUT_LEN} in / "
                      f"{OUTPUT_LEN} out tokens) ---", file=sys.stderr)
                wl = synthetic_workload(num_requests=n, request_rate=rate, input_len=INPUT_LEN,
                                        output_len=OUTPUT_LEN, seed=ns.seed)
                spec = RunSpec(
                    client=ClientConfig(base_url=srv.base_url, model="sim-llm"),
                    workload=wl, result_dir=root, run_name=f"rate-{rate:g}",
                    argv=["loadgen", "demo", "--rates", ns.rates],
                )
                res = execute(spec)
                print(render_summary(res.summary), file=sys.stderr)
                rows.append({"rate": rate, "summary": res.summary, "exit": res.exit_code})
                if res.summary["validity"]["verdict"] == "PARTIAL":  # Ctrl-C/SIGTERM: stop here
                    print(f"loadgen demo: interrupted; partial run saved in {res.run_dir}",
                          file=sys.stderr)
                    return res.exit_code
    except ServerStartError as e:
        print(f"loadgen demo: {e}", file=sys.stderr)
        return EXIT_ERROR
    table = sweep_table(rows)
    report = root / "report.txt"
    report.write_text(
        f"llm-loadgen demo against the reference server ({stamp})\n"
        f"run directories: {', '.join(str(root / f'rate-{r:g}') for r in rates)}\n\n{table}\n"
    )
    print("\n" + table)
    print(f"\nreport: {report}\nrun directories under {root}/ "
          "(re-summarise any with: loadgen summary DIR)")
    return 0 if all(r["exit"] == 0 for r in rows) else 3
