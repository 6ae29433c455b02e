"""The OpenAI gateway's own cost in front of Triton: the same open-loop load, alternately
through the gateway (OpenAI client, HTTP/SSE -> gateway -> gRPC -> Triton) and straight to
Triton (native gRPC streaming client, and HTTP generate_stream), against one Triton server.

    python benchmarks/triton_gateway.py [--rate 8] [--requests 120] [--rounds 3] [--size tiny]

The difference of the medians (gateway minus native gRPC) is the gateway's added latency per
request (TTFT) and per token (ITL). Each round runs every client once, in turn, with the same
seeded workload, so slow drift of the machine hits all of them alike. Prints a table and writes
benchmarks/results/triton_gateway-<time>.json. Not a test: figures are reported, not asserted
(docs/servers.md, "Gateway overhead").
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from analysis.load import load_run
from analysis.metrics import derive
from arrivals.workload import synthetic_workload
from loadgen.clients.openai import ClientConfig
from loadgen.clients.triton import TritonConfig, TritonGrpcClient, TritonHttpClient
from loadgen.run import RunSpec, execute
from servers.launch import ServeSettings, launch
from servers.models.hf_tiny import cached_tiny_hf
from servers.triton.dist import ensure_triton
from servers.triton.runtime import TritonRuntime

HERE = Path(__file__).resolve().parent


def _ms(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q) * 1e3) if a.size else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=8.0)
    p.add_argument("--requests", type=int, default=120)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", choices=("tiny", "small"), default="tiny")
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--max-batch-size", type=int, default=4)
    args = p.parse_args()
    ensure_triton()
    model = cached_tiny_hf(args.size)
    work = Path(tempfile.mkdtemp(prefix="triton-gateway-"))
    settings = ServeSettings(model=str(model), max_batch_size=args.max_batch_size,
                             served_model_name="bench", log_dir=work / "logs",
                             startup_timeout_s=300)
    wl = synthetic_workload(num_requests=args.requests, request_rate=args.rate,
                            input_len=32, output_len=args.output_len, seed=11)
    rows: dict[str, list[dict]] = {"gateway": [], "grpc": [], "http": []}
    with launch(TritonRuntime(instances=args.instances), settings) as srv:
        t = srv.info()["triton"]
        clients = {
            "gateway": ClientConfig(base_url=srv.base_url, model="bench", ignore_eos=True),
            "grpc": TritonGrpcClient(TritonConfig(t["grpc"], t["model"], "grpc",
                                                  ignore_eos=True)),
            "http": TritonHttpClient(TritonConfig(t["http"], t["model"], "http",
                                                  ignore_eos=True)),
        }
        for rnd in range(args.rounds):
            for name, client in clients.items():
                res = execute(RunSpec(client=client, workload=wl, result_dir=work,
                                      run_name=f"{name}-{rnd}", progress=False, quiet=True,
                                      max_send_lag_ms=50.0))
                d = derive(load_run(res.run_dir).requests)
                rows[name].append({
                    "ok": int(d.ok.sum()), "n": len(wl),
                    "ttft_p50_ms": _ms(d.ttft_sent, 50), "ttft_p99_ms": _ms(d.ttft_sent, 99),
                    "e2e_p50_ms": _ms(d.e2e_sent, 50), "e2e_p99_ms": _ms(d.e2e_sent, 99),
                    "itl_p50_ms": _ms(d.itl, 50), "itl_p99_ms": _ms(d.itl, 99),
                    "client_cpu_us_per_request":
                        (res.summary["self_check"]["client_cpu"] or {}).get("us_per_request"),
                    "verdict": res.summary["validity"]["verdict"]})
                print(name, rnd, rows[name][-1], flush=True)
    keys = ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "e2e_p50_ms",
            "e2e_p99_ms")
    med = {n: {k: float(np.median([r[k] for r in rs])) for k in keys} for n, rs in rows.items()}
    print(f"\nmedian over {args.rounds} rounds, {args.requests} requests at {args.rate} req/s, "
          f"{args.output_len} tokens, model {args.size}, {args.instances} instances, "
          f"batch {args.max_batch_size} (ms, from t_sent)")
    print("| client | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for n, m in med.items():
        print(f"| {n} | " + " | ".join(f"{m[k]:.2f}" for k in keys) + " |")
    print("| gateway - grpc | " + " | ".join(f"{med['gateway'][k] - med['grpc'][k]:+.2f}"
                                               for k in keys) + " |")
    out = HERE / "results" / f"triton_gateway-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rounds": rows, "median": med,
                               "server": srv.info()}, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
