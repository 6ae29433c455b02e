#!/usr/bin/env python3
"""Client-overhead benchmark: how fast can ONE generator process send, and what does it cost?

Design principle 6 ("fast enough to never be the bottleneck"), measured. A null server (nginx
serving a static 64-token SSE stream with usage, tools/nullserver/start.sh) stands in for the
model server, so the generator, not the server, is the limit. For each rate of a ladder one
``loadgen run`` process sends an open-loop Poisson load (16-token prompts, 64 streamed tokens
per response) for a few seconds, and each step gets two verdicts:

    keeps up   <=>  achieved send rate >= 99% of intended  AND  no failed or unsent request
                    AND  the server received every request  AND  send-lag p99 < 5 ms
                    (loadgen's own VALID threshold, --max-send-lag-ms)
    sustained  <=>  keeps up  AND  send-lag p99 < 1 ms

The ladder climbs until the first step that does not keep up, then bisects a few times at the
boundary of "sustained" (or, if no step was sustained, of "keeps up"). The headline is the
highest sustained rate below the lowest rate that was not sustained (a lucky pass above a
failure does not count). Client CPU per request and per output token comes from the run's
own self-check (getrusage of the generator over t0..end, summary.json); the server's access
log ($msec of each request) gives the rate the server really received, and /proc gives the
CPU that nginx and everything else on the machine used during each step.

A second part sweeps the pacer's ``EngineOptions.spin_s`` (``--spin-us``): the same runs made
through ``loadgen.run.execute`` with a different spin, to show send-lag precision against CPU.
``--profile`` adds one run under py-spy (if installed) and prints the hot spots.

Run from the repository root with the project's virtual environment:

    .venv/bin/python benchmarks/client_overhead.py            # 2-3 minutes
    .venv/bin/python benchmarks/client_overhead.py --help

Output: a table on stdout and benchmarks/results/client_overhead-<UTC time>.json
(benchmarks/README.md explains every column).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NULLSERVER = "../shared/tools/nullserver/start.sh"  # relative to the repository root
DEFAULT_RATES = (250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000)
DEFAULT_SPIN_US = (0, 200, 500, 1000)
MODEL = "mock-model"
INPUT_LEN, OUTPUT_LEN = 16, 64

LAG_P99_LIMIT_MS = 1.0  # "sustained"
VALID_LAG_P99_MS = 5.0  # "keeps up": loadgen run's default --max-send-lag-ms
MIN_ACHIEVED_FRACTION = 0.99
STEP_OVERHEAD_S = 3.0  # process start, imports, preflight, summary: budget estimate per step

try:
    import orjson
    import psutil

    from loadgen.manifest import basic_environment, tool_info
except ImportError as e:  # pragma: no cover - depends on how the script is started
    sys.exit(f"client_overhead.py: cannot import {e.name!r}; run it with the project's virtual "
             "environment, e.g. .venv/bin/python benchmarks/client_overhead.py")


# --------------------------------------------------------------------------------------------
# Pure part: verdicts, the ladder, server-side rates, the table
# --------------------------------------------------------------------------------------------

@dataclass
class Step:
    """One measured run of the generator and what it cost."""

    phase: str  # ladder | spin | profile
    rate: float  # requested mean rate (req/s)
    num_prompts: int
    workers: int = 1  # loadgen run --workers
    repeat: int = 0  # which repetition of the ladder (--repeat)
    spin_us: float | None = None  # None: loadgen's default (the CLI has no flag for it)
    run_dir: str = ""
    rc: int | None = None
    timed_out: bool = False
    wall_s: float = 0.0  # the whole step, process start to exit
    intended_rate: float = math.nan  # n / last intended time of the seeded schedule
    achieved_rate: float = math.nan  # summary throughput.achieved_send_rate
    server_rate: float = math.nan  # requests in nginx's access log / (last arrival - t0)
    server_received: int | None = None
    sent: int = 0
    ok: int = 0
    failed: int = 0
    not_sent: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    lag_p50_ms: float = math.nan
    lag_p99_ms: float = math.nan
    lag_max_ms: float = math.nan
    loop_lag_p99_ms: float = math.nan
    worst_worker_lag_p99_ms: float = math.nan  # the latest worker's send-lag p99
    ttft_p50_ms: float = math.nan  # from t_sent
    ttft_p99_ms: float = math.nan
    cpu_us_per_request: float = math.nan  # generator CPU over t0..end (summary self_check)
    cpu_us_per_token: float = math.nan
    cpu_utilisation: float = math.nan  # generator CPU s / wall s over t0..end (cores)
    process_cpu_s: float = math.nan  # the whole generator process, start-up included
    nginx_cores: float = math.nan  # nginx CPU s / step wall s
    others_cores: float = math.nan  # everything else on the machine, same window
    keeps_up: bool = False
    sustained: bool = False
    reasons: list[str] = field(default_factory=list)  # why not sustained (empty: sustained)


def judge(s: Step) -> tuple[list[str], list[str]]:
    """(why the generator did not keep up, why the step was not sustained); empty: it did."""
    behind: list[str] = []
    if s.timed_out:
        behind.append("step timed out")
    elif s.rc not in (0, 3):  # 3: loadgen's INVALID (lag p99 > its own 5 ms threshold)
        behind.append(f"loadgen exited with {s.rc}")
    if not s.achieved_rate >= MIN_ACHIEVED_FRACTION * s.intended_rate:
        behind.append(f"achieved {s.achieved_rate:.0f}/s < {MIN_ACHIEVED_FRACTION:.0%} of "
                      f"intended {s.intended_rate:.0f}/s")
    if s.failed or s.not_sent:
        behind.append(f"{s.failed} failed, {s.not_sent} not sent")
    if s.server_received is not None and s.server_received != s.sent:
        behind.append(f"server received {s.server_received} of {s.sent} sent requests")
    # the run's p99 and, with several workers, the latest worker's p99 (as loadgen's verdict)
    p99 = max(s.lag_p99_ms, s.worst_worker_lag_p99_ms) if s.workers > 1 else s.lag_p99_ms
    who = "worst worker's " if s.workers > 1 and p99 > s.lag_p99_ms else ""
    if not p99 < VALID_LAG_P99_MS:
        behind.append(f"{who}send-lag p99 {p99:.3g} ms >= {VALID_LAG_P99_MS:g} ms")
    strict = list(behind)
    if VALID_LAG_P99_MS > p99 >= LAG_P99_LIMIT_MS:
        strict.append(f"{who}send-lag p99 {p99:.3g} ms >= {LAG_P99_LIMIT_MS:g} ms")
    return behind, strict


def _midpoint(done: dict[float, bool], granularity: float) -> float | None:
    """Bisect between the highest pass below the lowest failure and that failure."""
    fails = [r for r, ok in done.items() if not ok]
    if not fails:
        return None
    lo_fail = min(fails)
    passes = [r for r, ok in done.items() if ok and r < lo_fail]
    if not passes:
        return None
    mid = round((max(passes) + lo_fail) / 2 / granularity) * granularity
    return mid if max(passes) < mid < lo_fail and mid not in done else None


def next_rate(ladder: list[float], done: dict[float, tuple[bool, bool]], refine: int,
              granularity: float = 25.0) -> float | None:
    """The next rate to try, or None when done. ``done[rate] = (sustained, keeps_up)``.

    Climb ``ladder`` until the first rate at which the generator does not keep up; then bisect
    up to ``refine`` times: at the boundary of "sustained" while there is one to narrow, else
    at the boundary of "keeps up".
    """
    if all(k for _, k in done.values()):
        rest = [r for r in ladder if r not in done]
        if rest:
            return rest[0]
    if sum(1 for r in done if r not in ladder) >= refine:
        return None
    for which in (0, 1):
        mid = _midpoint({r: v[which] for r, v in done.items()}, granularity)
        if mid is not None:
            return mid
    return None


def highest(steps: list[Step], attr: str = "sustained", workers: int = 1,
            repeat: int | None = None) -> Step | None:
    """The highest ladder step of ``workers`` processes (of one repetition, or of all) with
    ``attr`` (sustained / keeps_up) below the lowest one without it (conservative: a lucky
    pass above a failure does not count)."""
    lad = [s for s in steps if s.phase == "ladder" and s.workers == workers
           and (repeat is None or s.repeat == repeat)]
    lo_fail = min((s.rate for s in lad if not getattr(s, attr)), default=math.inf)
    ok = [s for s in lad if getattr(s, attr) and s.rate < lo_fail]
    return max(ok, key=lambda s: s.rate, default=None)


def parse_access_log(text: str, t_from: float) -> list[float]:
    """Arrival times ($msec) of completion requests at or after ``t_from`` (unix seconds).

    Lines are ``$msec $request_uri`` (start.sh's log format); $msec has 1 ms resolution, so
    the bound is widened by 1.5 ms. The preflight request comes >= 50 ms before t0.
    """
    out = []
    for line in text.splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2 and "completions" in parts[1]:
            t = float(parts[0])
            if t >= t_from - 0.0015:
                out.append(t)
    return out


def server_rate(arrivals: list[float], t0_unix: float) -> float:
    """Requests received per second, measured like the generator's achieved send rate
    (count / time of the last one after t0)."""
    if not arrivals:
        return math.nan
    span = max(arrivals) - t0_unix
    return len(arrivals) / span if span > 0 else math.nan


def _f(x: float | None, nd: int = 0, w: int = 8) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-".rjust(w)
    return f"{x:{w}.{nd}f}"


TABLE_HEADER = (
    "W r  rate  achieved    server  lag p50  lag p99  lag max  TTFT p50 TTFT p99  us/req  us/tok"
    "  gen CPU  nginx  others  wp99  err  verdict"
)


def table_row(s: Step) -> str:
    rate = f"{s.workers:<2d}{s.repeat:<2d}{s.rate:5.0f}"
    err = s.failed + s.not_sent
    return (f"{rate}{_f(s.achieved_rate, 1, 10)}{_f(s.server_rate, 1, 10)}{_f(s.lag_p50_ms, 3, 9)}"
            f"{_f(s.lag_p99_ms, 3, 9)}{_f(s.lag_max_ms, 2, 9)}{_f(s.ttft_p50_ms, 3, 9)}"
            f"{_f(s.ttft_p99_ms, 2, 9)}{_f(s.cpu_us_per_request, 0, 8)}{_f(s.cpu_us_per_token, 2, 8)}"
            f"{_f(s.cpu_utilisation, 2, 9)}{_f(s.nginx_cores, 2, 7)}{_f(s.others_cores, 2, 8)}"
            f"{_f(s.worst_worker_lag_p99_ms if s.workers > 1 else None, 2, 6)}"
            f"{err:5d}  {_verdict(s)}")


def _verdict(s: Step) -> str:
    if s.sustained:
        return "SUSTAINED"
    return ("keeps up; " if s.keeps_up else "BEHIND: ") + "; ".join(s.reasons)


def render_table(steps: list[Step], title: str) -> str:
    lines = [title, TABLE_HEADER, "-" * len(TABLE_HEADER)]
    lines += [table_row(s) for s in steps]
    return "\n".join(lines)


SPIN_HEADER = ("    rate  spin_us  lag p50  lag p99  lag max  loop p99  us/req  gen CPU  others"
               "  verdict")


def render_spin_table(steps: list[Step]) -> str:
    lines = ["pacer spin (EngineOptions.spin_s): send-lag precision vs client CPU",
             SPIN_HEADER, "-" * len(SPIN_HEADER)]
    for s in steps:
        lines.append(f"{s.rate:8.0f}{s.spin_us:9.0f}{_f(s.lag_p50_ms, 3, 9)}{_f(s.lag_p99_ms, 3, 9)}"
                     f"{_f(s.lag_max_ms, 2, 9)}{_f(s.loop_lag_p99_ms, 2, 10)}"
                     f"{_f(s.cpu_us_per_request, 0, 8)}{_f(s.cpu_utilisation, 2, 9)}"
                     f"{_f(s.others_cores, 2, 8)}  {_verdict(s)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Profile: py-spy raw (collapsed) stacks -> hot spots
# --------------------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """``send (loadgen/clients/openai.py:160)`` -> ``send (openai.py)``; lines dropped so one
    function is one entry."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{m['fn']} ({Path(m['file']).name})"


def engine_window(stack: str, run_line: int) -> bool:
    """Is this py-spy stack from the run itself (not imports, preflight or the summary)?
    The event loop's stacks pass through ``execute (.../run.py:LINE)`` where LINE is the
    ``uvloop.run(_run_async(...))`` call; the records writer thread only exists then."""
    return f"/run.py:{run_line})" in stack or ";Thread._bootstrap " in stack


def run_engine_line() -> int:
    """Line of ``uvloop.run(_run_async`` in loadgen/run.py (0 if it cannot be found)."""
    import loadgen.run

    for i, line in enumerate(Path(loadgen.run.__file__).read_text().splitlines(), 1):
        if "uvloop.run(_run_async" in line:
            return i
    return 0


def hot_spots(collapsed: str, keep: Any = None, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function and per thread, from py-spy's raw format
    (``thread;frame;...;frame count`` per line, with --threads); ``keep(stack)`` filters."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit() or (keep is not None and not keep(stack)):
            continue
        k = int(n)
        frames = stack.split(";")
        thread = re.sub(r"^thread \(\d+\): ", "", frames[0])
        frames = [_frame_name(f) for f in frames[1:]]
        total += k
        threads[thread] += k
        if frames:
            self_c[frames[-1]] += k
        for f in set(frames):
            incl_c[f] += k
    share = lambda c: [(f, n / total) for f, n in c.most_common(top)] if total else []  # noqa: E731
    return {"samples": total, "threads": share(threads), "self": share(self_c),
            "inclusive": share(incl_c)}


# --------------------------------------------------------------------------------------------
# Edges: the null server, one measured generator process
# --------------------------------------------------------------------------------------------

class GeneratorBroken(RuntimeError):
    """A generator process crashed without writing a summary: every further step would too."""


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of ``procs`` so far; a process that has exited counts 0."""
    tot = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            tot += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return tot


class NullServer:
    """nginx started by tools/nullserver/start.sh; stopped by its master PID."""

    def __init__(self, start_sh: Path, workdir: Path) -> None:
        self.start_sh = start_sh
        self.workdir = workdir
        self.log = workdir / "access.log"
        self.pid: int | None = None
        self.port = 0
        self.version = ""

    def start(self) -> None:
        last = ""
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = _free_port()
            env = {**os.environ, "NULL_ACCESS_LOG": str(self.log)}
            p = subprocess.run(["bash", str(self.start_sh), str(self.port), str(self.workdir / "srv")],
                               env=env, capture_output=True, text=True, timeout=30)
            out = p.stdout.strip().splitlines()
            if p.returncode == 0 and out and out[-1].strip().isdigit():
                self.pid = int(out[-1].strip())
                break
            last = (p.stderr or p.stdout).strip()[-500:]
        else:
            raise RuntimeError(f"{self.start_sh} failed to start nginx: {last}")
        _wait_http(f"{self.url}/v1/models", 10.0)
        v = subprocess.run([_nginx_path() or "nginx", "-v"], capture_output=True, text=True)
        self.version = (v.stderr or v.stdout).strip()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _procs(self) -> list[psutil.Process]:
        if self.pid is None:
            return []
        try:
            m = psutil.Process(self.pid)
            return [m, *m.children()]
        except psutil.NoSuchProcess:
            return []

    def cpu_s(self) -> float:
        return cpu_seconds(self._procs())

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def read_log(self, offset: int) -> str:
        if not self.log.exists():
            return ""
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode("ascii", "replace")

    def stop(self) -> None:
        """kill PID (nginx's fast shutdown), only if that PID is still our nginx."""
        if self.pid is None:
            return
        try:
            p = psutil.Process(self.pid)
            if "nginx" in p.name():
                p.terminate()
                p.wait(5)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass
        self.pid = None


def _nginx_path() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout_s: float) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        try:
            with opener.open(url, timeout=2) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except OSError as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise RuntimeError(f"null server at {url} did not answer 200 within {timeout_s:g} s "
                               f"(last: {last})")
        time.sleep(0.05)


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _busy_s() -> float:
    """CPU seconds used on the whole machine (all cores), steal included."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _stop_child(proc: subprocess.Popen) -> None:
    """SIGINT (loadgen saves a partial run), then SIGKILL if it does not exit within 10 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(step: Step, cmd: list[str], server: NullServer, run_dir: Path, timeout_s: float) -> Step:
    """Run one generator process, then read its summary, the server log and the CPU counters."""
    off = server.log_size()
    busy0, ng0, ch0, self0 = _busy_s(), server.cpu_s(), _children_cpu_s(), _self_cpu_s()
    t_start = time.perf_counter()
    out = run_dir.parent / f"{run_dir.name}.stdout"
    with out.open("wb") as fo, (run_dir.parent / f"{run_dir.name}.stderr").open("wb") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=REPO)
        try:
            step.rc = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            step.timed_out = True
            _stop_child(proc)
            step.rc = proc.returncode
        except BaseException:
            _stop_child(proc)
            raise
    step.wall_s = wall = time.perf_counter() - t_start
    gen = _children_cpu_s() - ch0
    ng = server.cpu_s() - ng0
    step.process_cpu_s = gen
    step.nginx_cores = ng / wall
    step.others_cores = max(0.0, (_busy_s() - busy0) - gen - ng - (_self_cpu_s() - self0)) / wall
    summ, man = run_dir / "summary.json", run_dir / "manifest.json"
    if not summ.exists():
        err = (run_dir.parent / f"{run_dir.name}.stderr").read_text(errors="replace").strip()
        step.reasons = [f"no summary.json (rc={step.rc}): {err[-300:]}"]
        return step
    step.run_dir = str(run_dir)
    s = orjson.loads(summ.read_bytes())
    m = orjson.loads(man.read_bytes())
    _fill(step, s)
    t0_unix = (m.get("clock") or {}).get("t0_unix")
    if t0_unix is not None:
        arr = parse_access_log(server.read_log(off), t0_unix)
        step.server_received = len(arr)
        step.server_rate = server_rate(arr, t0_unix)
    behind, step.reasons = judge(step)
    step.keeps_up, step.sustained = not behind, not step.reasons
    return step


def _num(x: Any) -> float:
    return float(x) if isinstance(x, int | float) else math.nan


def _fill(step: Step, s: dict[str, Any]) -> None:
    sc = s.get("self_check") or {}
    lag = sc.get("send_lag_ms") or {}
    cpu = sc.get("client_cpu") or {}
    tp = s.get("throughput") or {}
    c = s.get("counts") or {}
    ttft = ((s.get("latency_ms") or {}).get("from_sent") or {}).get("ttft") or {}
    step.intended_rate = _num(tp.get("intended_rate"))
    step.achieved_rate = _num(tp.get("achieved_send_rate"))
    step.sent, step.ok = int(c.get("sent", 0)), int(c.get("ok", 0))
    step.failed, step.not_sent = int(c.get("failed", 0)), int(c.get("not_sent", 0))
    step.errors = {k: v for k, v in (c.get("by_status") or {}).items() if k != "ok"}
    step.lag_p50_ms, step.lag_p99_ms = _num(lag.get("p50")), _num(lag.get("p99"))
    step.lag_max_ms = _num(lag.get("max"))
    step.loop_lag_p99_ms = _num((sc.get("event_loop_lag_ms") or {}).get("p99"))
    by_w = [_num(v.get("p99")) for v in (sc.get("send_lag_ms_by_worker") or {}).values()]
    step.worst_worker_lag_p99_ms = max(by_w) if by_w else math.nan
    step.ttft_p50_ms, step.ttft_p99_ms = _num(ttft.get("p50")), _num(ttft.get("p99"))
    step.cpu_us_per_request = _num(cpu.get("us_per_request"))
    step.cpu_us_per_token = _num(cpu.get("us_per_output_token"))
    step.cpu_utilisation = _num(cpu.get("utilisation"))


def loadgen_cmd(url: str, rate: float, n: int, result_dir: Path | str, name: str, seed: int,
                exe: str | None = None, workers: int = 1,
                http_client: str = "lean") -> list[str]:
    """The exact command a user would type (shown in the README and docs/benchmarks.md)."""
    if exe is not None:
        head = [exe]
    elif (venv := Path(sys.executable).with_name("loadgen")).exists():
        head = [str(venv)]
    else:
        head = [sys.executable, "-m", "loadgen"]
    return [*head, "run", "--base-url", url, "--model", MODEL, "--request-rate", f"{rate:g}",
            "--num-prompts", str(n), "--random-input-len", str(INPUT_LEN),
            "--random-output-len", str(OUTPUT_LEN), "--seed", str(seed), "--workers", str(workers),
            "--json", "--no-progress", "--result-dir", str(result_dir), "--run-name", name,
            "--http-client", http_client]


def engine_cmd(url: str, rate: float, n: int, result_dir: Path, name: str, seed: int,
               spin_us: float) -> list[str]:
    """This script in ``_engine`` mode: the same run as loadgen_cmd, with a chosen spin_s."""
    return [sys.executable, str(Path(__file__).resolve()), "_engine", "--base-url", url,
            "--rate", f"{rate:g}", "--num-prompts", str(n), "--seed", str(seed),
            "--result-dir", str(result_dir), "--run-name", name, "--spin-us", f"{spin_us:g}"]


def engine_child(argv: list[str]) -> int:
    """``_engine`` mode: what ``loadgen run`` does with its default flags, but with
    ``EngineOptions(spin_s=...)``, which the CLI does not expose."""
    p = argparse.ArgumentParser(prog="client_overhead.py _engine")
    p.add_argument("--base-url", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--num-prompts", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--result-dir", required=True)
    p.add_argument("--run-name", required=True)
    p.add_argument("--spin-us", type=float, required=True)
    a = p.parse_args(argv)
    from arrivals.workload import synthetic_workload
    from loadgen.clients.openai import ClientConfig
    from loadgen.engine import EngineOptions
    from loadgen.run import RunSpec, execute

    wl = synthetic_workload(num_requests=a.num_prompts, request_rate=a.rate, process="poisson",
                            input_len=INPUT_LEN, output_len=OUTPUT_LEN, seed=a.seed)
    extra: dict[str, Any] = {}
    if "telemetry" in {f.name for f in fields(RunSpec)}:
        try:  # the CLI's default telemetry (resource sampling), so the runs compare with the ladder
            from loadgen.telemetry.commands import options_from_argv

            extra["telemetry"] = options_from_argv([], a.base_url)
        except ImportError:
            pass
    spec = RunSpec(client=ClientConfig(base_url=a.base_url, model=MODEL), workload=wl,
                   engine=EngineOptions(spin_s=a.spin_us * 1e-6), result_dir=Path(a.result_dir),
                   run_name=a.run_name, progress=False, quiet=True,
                   argv=["client_overhead.py", "_engine", *argv], **extra)
    return execute(spec).exit_code


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

def _csv_ints(flag: str):
    def parse(s: str) -> list[int]:
        try:
            v = [int(x) for x in s.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be comma-separated whole numbers, "
                                             f"got {s!r}") from None
        if not v or min(v) < 1:
            raise argparse.ArgumentTypeError(f"{flag} needs numbers >= 1, got {s!r}")
        return v
    return parse


def _csv_floats(flag: str):
    def parse(s: str) -> list[float]:
        try:
            v = [float(x) for x in s.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be comma-separated numbers, got {s!r}") from None
        if any(not math.isfinite(x) or x < 0 for x in v):
            raise argparse.ArgumentTypeError(f"{flag} values must be finite and >= 0, got {s!r}")
        return v
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="client_overhead.py",
        description="Highest Poisson request rate one loadgen process sustains against a null "
        "server (send-lag p99 < 1 ms, >= 99%% of the intended rate, no errors), and the "
        "client CPU per request and per streamed token. See benchmarks/README.md.")
    p.add_argument("--nullserver", default=DEFAULT_NULLSERVER,
                   help="path of the null server's start.sh (relative paths are relative to the "
                   f"repository root; default {DEFAULT_NULLSERVER})")
    p.add_argument("--rates", type=_csv_floats("--rates"), default=list(DEFAULT_RATES),
                   help="ladder of request rates, req/s (default %(default)s)")
    p.add_argument("--refine", type=int, default=2,
                   help="bisection steps between the highest sustained rate and the first "
                   "failure (default 2)")
    p.add_argument("--duration-s", type=float, default=6.0,
                   help="intended length of each step in seconds (default 6); --num-prompts = "
                   "rate x duration, at least --min-prompts")
    p.add_argument("--min-prompts", type=int, default=1000)
    p.add_argument("--moderate-rate", type=float, default=500.0,
                   help="rate whose CPU figures are reported as 'moderate' (default 500); it is "
                   "added to the ladder if missing")
    p.add_argument("--spin-us", type=_csv_floats("--spin-us"), default=list(DEFAULT_SPIN_US),
                   help="pacer spin windows (EngineOptions.spin_s, microseconds) to sweep; "
                   "'' skips the sweep (default %(default)s)")
    p.add_argument("--spin-rates", default="moderate,max",
                   help="rates for the spin sweep: numbers, 'moderate' and/or 'max' (the highest "
                   "sustained rate); default %(default)s")
    p.add_argument("--profile", action="store_true",
                   help="also run once under py-spy (pip install py-spy) at --profile-rate and "
                   "print the hot spots")
    p.add_argument("--profile-rate", default="max",
                   help="rate of the profiled run: a number or 'max' (default)")
    p.add_argument("--workers", type=_csv_ints("--workers"), default=[1, 2],
                   help="generator process counts to measure (loadgen run --workers), one ladder "
                   "each, interleaved (default 1,2)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the ladders this many times (figures are given per repetition "
                   "and as ranges; default 1)")
    p.add_argument("--grid", action="store_true",
                   help="run every rate of --rates for each worker count instead of climbing "
                   "and bisecting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--http-client", choices=("lean", "aiohttp"), default="lean",
                   help="loadgen run --http-client of every ladder step (default lean)")
    p.add_argument("--step-timeout-s", type=float, default=None,
                   help="kill a step after this long (default: duration + 30 s)")
    p.add_argument("--budget-s", type=float, default=600.0,
                   help="skip steps that would end the benchmark later than this (default 600)")
    p.add_argument("--out", default=None,
                   help="result JSON (default benchmarks/results/client_overhead-<UTC time>.json)")
    p.add_argument("--keep-runs", action="store_true", help="keep the run directories "
                   "(printed at the end) instead of deleting them")
    return p


def _resolve_nullserver(arg: str) -> Path:
    p = Path(arg)
    p = p if p.is_absolute() else (REPO / p)
    return p.resolve()


def preconditions(start_sh: Path) -> str | None:
    """A message saying what is missing, or None."""
    if _nginx_path() is None:
        return ("nginx was not found on PATH (or in /usr/sbin): the null server is nginx. "
                "Install it, e.g. on Debian/Ubuntu: apt-get install nginx-light")
    if not start_sh.is_file():
        return (f"--nullserver {start_sh} does not exist; pass the path of the null server's "
                "start.sh (tools/nullserver/start.sh of the shared tools)")
    return None


class Bench:
    """Holds the state of one benchmark invocation: server, work dir, steps, deadline."""

    def __init__(self, args: argparse.Namespace, server: NullServer, work: Path) -> None:
        self.a = args
        self.server = server
        self.work = work
        self.steps: list[Step] = []
        self.skipped: list[str] = []
        self.deadline = time.monotonic() + args.budget_s
        self.timeout = args.step_timeout_s or args.duration_s + 30.0

    def n_for(self, rate: float) -> int:
        return max(self.a.min_prompts, round(rate * self.a.duration_s))

    def fits(self, rate: float) -> bool:
        est = self.n_for(rate) / rate + STEP_OVERHEAD_S
        return time.monotonic() + est <= self.deadline

    def run(self, phase: str, rate: float, spin_us: float | None = None,
            wrap: list[str] | None = None, workers: int = 1, repeat: int = 0) -> Step | None:
        label = (f"{phase} {workers}x {rate:g} req/s"
                 + ("" if spin_us is None else f" spin {spin_us:g} us"))
        if not self.fits(rate):
            self.skipped.append(f"{label}: skipped, --budget-s {self.a.budget_s:g} would be exceeded")
            print(f"  {label}: skipped (time budget)", file=sys.stderr)
            return None
        n = self.n_for(rate)
        name = (f"{len(self.steps):02d}-{phase}-w{workers}-{rate:g}-r{repeat}"
                + ("" if spin_us is None else f"-spin{spin_us:g}"))
        rd = self.work / "runs"
        rd.mkdir(exist_ok=True)
        if spin_us is None:
            cmd = loadgen_cmd(self.server.url, rate, n, rd, name, self.a.seed, workers=workers,
                              http_client=self.a.http_client)
        else:
            cmd = engine_cmd(self.server.url, rate, n, rd, name, self.a.seed, spin_us)
        step = Step(phase=phase, rate=rate, num_prompts=n, spin_us=spin_us, workers=workers,
                    repeat=repeat)
        print(f"  {label}: {n} requests ...", end="", flush=True, file=sys.stderr)
        measure(step, [*(wrap or []), *cmd], self.server, rd / name, self.timeout)
        print(f" {_verdict(step)}", file=sys.stderr)
        self.steps.append(step)
        if not step.run_dir or not (Path(step.run_dir) / "summary.json").exists():
            raise GeneratorBroken(f"the generator wrote no summary ({'; '.join(step.reasons)}); "
                                  f"command: {' '.join(cmd)}")
        return step

    def ladder(self) -> None:
        """One ladder per worker count of --workers, interleaved (each count takes its next
        step in turn), so that a noisy minute on a shared machine hits every count alike;
        ``--repeat`` times. With ``--grid`` every rate of --rates is run (no climbing and
        bisecting), which shows achieved against requested rate past each count's limit."""
        rates = sorted(set(self.a.rates) | {self.a.moderate_rate})
        for k in range(self.a.repeat):
            done: dict[int, dict[float, tuple[bool, bool]]] = {w: {} for w in self.a.workers}
            active = list(self.a.workers)
            while active:
                for w in list(active):
                    if self.a.grid:
                        r = next((x for x in rates if x not in done[w]), None)
                    else:
                        r = next_rate(rates, done[w], self.a.refine)
                    s = self.run("ladder", r, workers=w, repeat=k) if r is not None else None
                    if s is None:
                        active.remove(w)
                        continue
                    done[w][r] = (s.sustained, s.keeps_up)

    def spin_sweep(self, best: Step | None) -> None:
        """``best``: the rate that 'max' stands for."""
        rates: list[float] = []
        for tok in self.a.spin_rates.split(","):
            tok = tok.strip()
            if tok == "moderate":
                rates.append(self.a.moderate_rate)
            elif tok == "max":
                if best is not None:
                    rates.append(best.rate)
            elif tok:
                rates.append(float(tok))
        for r in dict.fromkeys(rates):
            for sp in self.a.spin_us:
                self.run("spin", r, spin_us=sp)

    def profile(self, best: Step | None) -> dict[str, Any] | None:
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if spy is None:
            self.skipped.append("profile: py-spy not installed (.venv/bin/pip install py-spy)")
            return None
        rate = (best.rate if best else self.a.moderate_rate) if self.a.profile_rate == "max" \
            else float(self.a.profile_rate)
        raw = self.work / "profile.txt"
        opts = ["--format", "raw", "--threads", "--nonblocking", "--rate", "400"]
        s = self.run("profile", rate, wrap=[spy, "record", *opts, "--output", str(raw), "--"])
        if s is None or not raw.exists():
            return None
        line = run_engine_line()
        hs = hot_spots(raw.read_text(errors="replace"), keep=lambda st: engine_window(st, line))
        # py-spy drops idle samples, so a share of samples is a share of the run's CPU time
        per_req = s.cpu_us_per_request
        for k in ("self", "inclusive"):
            hs[k] = [(fn, share, share * per_req) for fn, share in hs[k]]
        return {"rate": rate, "tool": "py-spy record " + " ".join(opts),
                "window": f"engine only: stacks under loadgen/run.py:{line} and the records thread",
                "columns": ["function", "share of samples", "approx us per request"],
                "step": asdict(s), **hs}


def _clean(x: Any) -> Any:
    """NaN -> None so the JSON is valid everywhere."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def _cpu_view(s: Step | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"rate": s.rate, "us_per_request": s.cpu_us_per_request,
            "us_per_output_token": s.cpu_us_per_token, "cpu_utilisation": s.cpu_utilisation,
            "send_lag_p99_ms": s.lag_p99_ms, "sustained": s.sustained}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_engine"]:
        return engine_child(argv[1:])
    a = build_parser().parse_args(argv)
    start_sh = _resolve_nullserver(a.nullserver)
    if (msg := preconditions(start_sh)) is not None:
        print(f"client_overhead.py: {msg}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else (REPO / "benchmarks" / "results" /
                                     f"client_overhead-{datetime.now(UTC):%Y-%m-%dT%H%M%SZ}.json")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="client_overhead-"))
    work.chmod(0o755)  # nginx's worker (user nobody) must reach the static files below it
    server = NullServer(start_sh, work)
    started = datetime.now(UTC)
    load0 = os.getloadavg()
    interrupted = None
    bench: Bench | None = None
    prof = None
    try:
        server.start()
        print(f"null server: nginx pid {server.pid} on {server.url} ({server.version}); "
              f"work dir {work}", file=sys.stderr)
        bench = Bench(a, server, work)
        bench.ladder()
        top = highest(bench.steps) or highest(bench.steps, "keeps_up")
        if a.spin_us:
            bench.spin_sweep(top)
        if a.profile:
            prof = bench.profile(top)
    except KeyboardInterrupt as e:
        interrupted = str(e) or "SIGINT"
        print(f"\ninterrupted ({interrupted}): stopping nginx, writing what was measured",
              file=sys.stderr)
    except GeneratorBroken as e:
        interrupted = f"aborted: {e}"
        print(f"client_overhead.py: stopping: {e}", file=sys.stderr)
    except RuntimeError as e:  # the null server did not start
        print(f"client_overhead.py: {e}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    steps = bench.steps if bench else []
    skipped = bench.skipped if bench else []
    by_w: dict[int, dict[str, Any]] = {}
    for w in a.workers:
        lad = sorted((s for s in steps if s.phase == "ladder" and s.workers == w),
                     key=lambda s: (s.repeat, s.rate))
        by_w[w] = {"ladder": lad, "best": highest(steps, workers=w),
                   "keeps": highest(steps, "keeps_up", workers=w),
                   "moderate": next((s for s in lad if s.rate == a.moderate_rate), None),
                   "per_repeat": [{"sustained": _rate(highest(steps, workers=w, repeat=k)),
                                   "kept_up": _rate(highest(steps, "keeps_up", workers=w, repeat=k))}
                                  for k in range(a.repeat)]}
    w1 = by_w.get(1) or by_w[a.workers[0]]
    best, keeps, moderate = w1["best"], w1["keeps"], w1["moderate"]
    spin = [s for s in steps if s.phase == "spin"]

    print()
    for w, v in by_w.items():
        print(render_table(v["ladder"], f"ladder: `loadgen run --workers {w}`, Poisson, 16 prompt "
                           "/ 64 streamed tokens; latency in ms, CPU in cores; wp99: the "
                           "latest worker's send-lag p99"))
        print()
    if spin:
        print(render_spin_table(spin))
        print()
    for w, v in by_w.items():
        print(f"--workers {w}:")
        print(headline(v["best"], v["keeps"], v["moderate"], w))
    print(scaling_line(by_w))
    if prof:
        print()
        print(render_profile(prof))
    noisy = [s for s in steps if s.others_cores > 0.25]
    if noisy:
        print(f"\nnote: {len(noisy)} step(s) ran while other processes used > 0.25 cores "
              "(column 'others'); their figures are pessimistic, re-run on a quiet machine")
    for m in skipped:
        print(f"note: {m}")

    result = {
        "benchmark": "client_overhead",
        "created_utc": started.isoformat(),
        "finished_utc": datetime.now(UTC).isoformat(),
        "interrupted": interrupted,
        "command": ["benchmarks/client_overhead.py", *argv],
        "criteria": {"sustained": {"send_lag_p99_ms_below": LAG_P99_LIMIT_MS},
                     "keeps_up": {"send_lag_p99_ms_below": VALID_LAG_P99_MS,
                                  "achieved_fraction_at_least": MIN_ACHIEVED_FRACTION,
                                  "failed_or_not_sent": 0, "server_received_all": True}},
        "workload": {"process": "poisson", "input_len": INPUT_LEN, "output_len": OUTPUT_LEN,
                     "stream": True, "include_usage": True, "seed": a.seed,
                     "duration_s_per_step": a.duration_s},
        "example_command": " ".join(loadgen_cmd("http://127.0.0.1:PORT", a.moderate_rate,
                                                round(a.moderate_rate * a.duration_s), "TMP",
                                                "NAME", a.seed, exe="loadgen")),
        "machine": {**basic_environment(), "load_average_at_start": load0,
                    # pyarrow imports pandas, when installed, at its first pa.array() call,
                    # i.e. in the records thread during a run (about 0.5 s of imports)
                    "pandas_installed": importlib.util.find_spec("pandas") is not None},
        "tool": tool_info(),
        "null_server": {"start_sh": str(start_sh), "nginx": server.version,
                        "body": f"{OUTPUT_LEN} token events + usage + [DONE]"},
        "highest_sustained": _cpu_view(best),
        "highest_keeping_up": _cpu_view(keeps),
        "cpu_at_moderate_rate": _cpu_view(moderate),
        "ladder": [asdict(s) for s in w1["ladder"]],
        "by_workers": {str(w): {"highest_sustained": _cpu_view(v["best"]),
                                "highest_keeping_up": _cpu_view(v["keeps"]),
                                "cpu_at_moderate_rate": _cpu_view(v["moderate"]),
                                "per_repeat": v["per_repeat"],
                                "ladder": [asdict(s) for s in v["ladder"]]}
                       for w, v in by_w.items()},
        "scaling": scaling_line(by_w),
        "spin_sweep": [asdict(s) for s in spin],
        "profile": prof,
        "skipped": skipped,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(_clean(result), option=orjson.OPT_INDENT_2))
    print(f"\nresults: {out}")
    if a.keep_runs:
        print(f"run directories: {work / 'runs'}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if interrupted and interrupted.startswith("aborted"):
        return 1
    return 130 if interrupted else 0


def _rate(s: Step | None) -> float | None:
    return s.rate if s else None


def scaling_line(by_w: dict[int, dict[str, Any]]) -> str:
    """Highest sustained / kept-up rate of each worker count, as ratios to the first count
    (over all repetitions, conservatively), and per repetition when there are several."""
    ws = list(by_w)
    out = []
    reps = len(by_w[ws[0]].get("per_repeat") or [])
    for k in range(reps if reps > 1 else 0):
        out.append(f"repetition {k}: " + "; ".join(
            f"--workers {w}: sustained {by_w[w]['per_repeat'][k]['sustained'] or 'none'}, "
            f"kept up {by_w[w]['per_repeat'][k]['kept_up'] or 'none'}" for w in ws))
    for key, word in (("best", "sustained"), ("keeps", "kept up")):
        rates = {w: (by_w[w][key].rate if by_w[w][key] else None) for w in ws}
        base = rates[ws[0]]
        parts = [f"{w}: {r:g}" if r else f"{w}: none" for w, r in rates.items()]
        ratios = [f"{w}/{ws[0]} = {rates[w] / base:.2f}x" for w in ws[1:] if rates[w] and base]
        out.append(f"highest {word} rate by --workers: " + ", ".join(parts)
                   + (f" ({', '.join(ratios)})" if ratios else ""))
    return "\n".join(out)


def headline(best: Step | None, keeps: Step | None, moderate: Step | None,
             workers: int = 1) -> str:
    def cpu(s: Step) -> str:
        return (f"client CPU {s.cpu_us_per_request:.0f} us/request, {s.cpu_us_per_token:.2f} "
                f"us/token, {s.cpu_utilisation:.2f} cores; send-lag p99 {s.lag_p99_ms:.3f} ms")

    lines = []
    if best:
        lines.append(f"highest sustained rate (lag p99 < {LAG_P99_LIMIT_MS:g} ms), {workers} "
                     f"process{'es' if workers > 1 else ''}: {best.rate:g} req/s ({cpu(best)})")
    else:
        lines.append(f"no ladder step was sustained (send-lag p99 < {LAG_P99_LIMIT_MS:g} ms)")
    if keeps:
        lines.append(f"highest rate it keeps up with (lag p99 < {VALID_LAG_P99_MS:g} ms): "
                     f"{keeps.rate:g} req/s ({cpu(keeps)})")
    if moderate:
        lines.append(f"at {moderate.rate:g} req/s: {cpu(moderate)}")
    return "\n".join(lines)


def render_profile(prof: dict[str, Any], n: int = 15) -> str:
    lines = [f"py-spy profile at {prof['rate']:g} req/s, {prof['window']} "
             f"({prof['samples']} samples)",
             "  threads: " + ", ".join(f"{t} {f:.0%}" for t, f in prof["threads"]),
             "  self time                                            share  us/req"]
    lines += [f"    {fn[:50]:50s} {f:6.1%} {us:7.1f}" for fn, f, us in prof["self"][:n]]
    lines.append("  inclusive time")
    lines += [f"    {fn[:50]:50s} {f:6.1%} {us:7.1f}" for fn, f, us in prof["inclusive"][:n]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
