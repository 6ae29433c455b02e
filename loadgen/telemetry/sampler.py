"""A resource sampler that runs in its own thread (in loadgen run: in a separate process,
``loadgen.telemetry.process``), off the event loop.

Every ``interval_s`` it reads, from /proc (and psutil for disks, NICs and process trees):
the host (per-core busy fraction, memory, page faults, context switches, disk and NIC bytes),
the generator process (with its worker processes, when it has them: ``gen_pids``), the
server's process tree (given its pid), and each GPU via NVML.
Counters are stored as the kernel reports them (cumulative since boot / process start,
suffix ``_total``); gauges as read. Times are ``time.perf_counter()`` (CLOCK_MONOTONIC, the
clock of requests.parquet) and are shifted to the run's t0 when the table is built.

The sampler measures itself: ``sampler_cpu_s_total`` is the CPU time of its own thread
(``time.thread_time``) and ``sample_s`` how long each sample took.

With a ``spool`` (loadgen.telemetry.spool) every row is also appended to disk as it is taken,
so a run whose generator dies keeps its samples (``loadgen.telemetry.recover``).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa

from loadgen.telemetry.spool import Spool

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
NAN = math.nan


def read_proc(pid: int | str = "self") -> dict[str, float] | None:
    """CPU seconds, page faults, RSS, threads and context switches of one process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    f = stat[stat.rindex(")") + 2:].split()
    out = {"cpu_s_total": (int(f[11]) + int(f[12])) / CLK_TCK,  # utime + stime (fields 14, 15)
           "minflt_total": float(f[7]), "majflt_total": float(f[9]),  # fields 10, 12
           "threads": float(f[17]), "rss_bytes": float(int(f[21]) * PAGE)}  # fields 20, 24
    for line in status.splitlines():
        if line.startswith("voluntary_ctxt_switches"):
            out["ctx_vol_total"] = float(line.split()[1])
        elif line.startswith("nonvoluntary_ctxt_switches"):
            out["ctx_invol_total"] = float(line.split()[1])
    return out


def tree_pids(pid: int) -> list[int] | None:
    """A process and all its descendants (a scan of /proc: ~5 ms with 100 processes)."""
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return None


def read_tree(pid: int, pids: list[int] | None = None) -> dict[str, float] | None:
    """``read_proc`` summed over a process and all its descendants (None if it is gone).

    ``pids``: the tree found earlier (the sampler re-scans it every few seconds only).
    """
    pids = pids if pids is not None else tree_pids(pid)
    if not pids:
        return None
    total: dict[str, float] = {}
    n = 0
    for p in pids:
        r = read_proc(p)
        if r is None:
            continue
        n += 1
        for k, v in r.items():
            total[k] = total.get(k, 0.0) + v
    if not n:
        return None
    total["processes"] = float(n)
    return total


def read_reaped(pid: int | str = "self") -> dict[str, float] | None:
    """CPU seconds and page faults of the children that ``pid`` has waited for (its exited,
    reaped children: /proc/PID/stat cutime, cstime, cminflt, cmajflt), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    f = stat[stat.rindex(")") + 2:].split()
    return {"cpu_s_total": (int(f[13]) + int(f[14])) / CLK_TCK,  # fields 16, 17
            "minflt_total": float(f[8]), "majflt_total": float(f[10])}  # fields 11, 13


class ProcessGroup:
    """The generator as a set of processes: a parent and its worker processes (its children).

    Each sample sums ``read_proc`` over the parent and the workers alive, and adds what the
    parent's reaped children used (``read_reaped``: the kernel moves an exited child's CPU
    time and page faults to its parent when the parent waits for it). A worker that exits and
    is reaped thus moves from one term to the other, whole: CPU and page-fault sums never
    step down and include a worker's last moments. Context switches have no such account:
    an exited worker's stay at its last reading. Gauges (RSS, threads) are the live
    processes'. A pid seen gone is never read again (no reuse). ``processes``: the number
    read this time.
    """

    def __init__(self, parent: int, workers: list[int]) -> None:
        self.parent = parent
        self.workers = [w for w in dict.fromkeys(workers) if w != parent]
        self.last_ctx: dict[int, dict[str, float]] = {}
        self.gone: set[int] = set()

    def read(self) -> dict[str, float] | None:
        me = read_proc(self.parent)
        if me is None:
            return None
        total = dict(me)
        for k, v in (read_reaped(self.parent) or {}).items():
            total[k] += v
        n = 1
        for w in self.workers:
            r = None if w in self.gone else read_proc(w)
            if r is None:
                self.gone.add(w)
                r = self.last_ctx.get(w, {})
            else:
                n += 1
                self.last_ctx[w] = {k: v for k, v in r.items() if k.startswith("ctx_")}
            for k, v in r.items():
                total[k] = total.get(k, 0.0) + v
        total["processes"] = float(n)
        return total


def _cpu_jiffies() -> tuple[list[tuple[int, int]], float]:
    """Per core (busy, total) jiffies, and the host's context switches, from /proc/stat."""
    cores, ctxt = [], NAN
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            v = [int(x) for x in line.split()[1:]]
            total = sum(v[:8])  # user nice system idle iowait irq softirq steal
            cores.append((total - v[3] - v[4], total))
        elif line.startswith("ctxt"):
            ctxt = float(line.split()[1])
    return cores, ctxt


def _vmstat() -> dict[str, float]:
    want = {"pgfault": "host_page_faults_total", "pgmajfault": "host_major_faults_total"}
    out = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        k, _, v = line.partition(" ")
        if k in want:
            out[want[k]] = float(v)
    return out


def _meminfo() -> dict[str, float]:
    m = {}
    for line in Path("/proc/meminfo").read_text().splitlines()[:5]:
        k, _, v = line.partition(":")
        m[k] = float(v.split()[0]) * 1024
    return {"host_mem_used_bytes": m["MemTotal"] - m.get("MemAvailable", NAN),
            "host_mem_available_bytes": m.get("MemAvailable", NAN)}


class GpuReader:
    """NVML readings per GPU; ``reason`` says why there are none.

    Fails soft: no library or no driver gives no handles and a ``reason``; a reading NVML
    refuses (NotSupported on a MIG slice, a GPU that fell off the bus) or a call missing from
    this nvidia-ml-py is NaN for that field only. Tested with a fake NVML module
    (tests/test_telemetry_gpu_fake.py); docs/telemetry.md says what never ran on a real GPU.
    """

    FIELDS = (
        ("util_pct", "nvmlDeviceGetUtilizationRates", (), "gpu", 1.0),
        ("mem_util_pct", "nvmlDeviceGetUtilizationRates", (), "memory", 1.0),
        ("mem_used_bytes", "nvmlDeviceGetMemoryInfo", (), "used", 1.0),
        ("power_w", "nvmlDeviceGetPowerUsage", (), None, 1e-3),  # mW
        ("sm_clock_mhz", "nvmlDeviceGetClockInfo", ("NVML_CLOCK_SM",), None, 1.0),
        ("mem_clock_mhz", "nvmlDeviceGetClockInfo", ("NVML_CLOCK_MEM",), None, 1.0),
        ("temp_c", "nvmlDeviceGetTemperature", ("NVML_TEMPERATURE_GPU",), None, 1.0),
        # renamed "clocks event reasons" in NVML 12.x; older bindings say "throttle"
        ("throttle_reasons", ("nvmlDeviceGetCurrentClocksEventReasons",
                              "nvmlDeviceGetCurrentClocksThrottleReasons"), (), None, 1.0),
    )

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.reason: str | None = None
        try:
            import pynvml
        except ImportError:
            self.reason = "nvidia-ml-py is not installed"
            return
        self.nv = pynvml
        try:
            pynvml.nvmlInit()
        except Exception as e:  # noqa: BLE001 - NVMLError or a broken library: say which
            self.reason = f"NVML could not initialise: {e}"
            return
        try:
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                            for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as e:  # noqa: BLE001
            self.reason = f"NVML could not list the GPUs: {e}"
            self.handles = []
            self._shutdown()
            return
        if not self.handles:
            self.reason = "NVML sees no GPU"
            self._shutdown()

    def _call(self, names: str | tuple[str, ...], h: Any, consts: tuple[str, ...]) -> Any:
        nv = self.nv
        for name in (names,) if isinstance(names, str) else names:
            fn = getattr(nv, name, None)
            if fn is not None:
                return fn(h, *(getattr(nv, c) for c in consts))
        raise AttributeError(f"this nvidia-ml-py has none of {names}")

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, h in enumerate(self.handles):
            cache: dict[str, Any] = {}
            for col, names, consts, attr, scale in self.FIELDS:
                key = f"{names}{consts}"
                try:
                    if key not in cache:
                        cache[key] = self._call(names, h, consts)
                    v = cache[key]
                    out[f"gpu{i}_{col}"] = float(getattr(v, attr) if attr else v) * scale
                except Exception:  # noqa: BLE001 - NVMLError, missing call: NaN, keep going
                    cache.setdefault(key, None)
                    out[f"gpu{i}_{col}"] = NAN
        return out

    def _shutdown(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110 - nothing left to report
            pass

    def close(self) -> None:
        if self.handles:
            self._shutdown()


@dataclass
class Sampler:
    """Start with ``start()``, stop with ``stop()``; ``table(t0)`` gives the rows."""

    interval_s: float = 1.0
    server_pid: int | None = None
    gpus: bool = True
    rows: list[dict[str, float]] = field(default_factory=list)
    gpu_reason: str | None = None
    server_reason: str | None = None
    cpu_s: float = 0.0  # the sampler thread's own CPU time
    tree_refresh_s: float = 5.0  # how often the server's process tree is re-scanned
    gen_pid: int | None = None  # the generator (default: this process)
    gen_pids: list[int] = field(default_factory=list)  # its worker processes (summed with it)
    spool: Spool | None = None  # also append each row here as it is taken
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="telemetry-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        gpu = GpuReader() if self.gpus else None
        self.gpu_reason = gpu.reason if gpu else "disabled"
        if self.spool is not None:
            self.spool.meta(kind="sampler", pid=os.getpid(), interval_s=self.interval_s,
                            server_pid=self.server_pid, gpu_reason=self.gpu_reason)
        prev_cores: list[tuple[int, int]] | None = None
        me = self.gen_pid or os.getpid()
        group = ProcessGroup(me, self.gen_pids) if self.gen_pids else None
        pids: list[int] | None = None
        pids_at = -math.inf
        c0 = time.thread_time()
        try:
            while True:
                t_start = time.perf_counter()
                row: dict[str, float] = {"t_mono": t_start}
                cores, ctxt = _cpu_jiffies()
                row["host_ctx_switches_total"] = ctxt
                if prev_cores is not None and len(prev_cores) == len(cores):
                    busy = []
                    for i, ((b1, t1), (b0, t0)) in enumerate(zip(cores, prev_cores, strict=True)):
                        frac = (b1 - b0) / (t1 - t0) if t1 > t0 else NAN
                        row[f"host_cpu{i}_busy"] = frac
                        busy.append(frac)
                    row["host_cpu_busy"] = sum(busy) / len(busy) if busy else NAN
                prev_cores = cores
                row.update(_vmstat())
                row.update(_meminfo())
                d = psutil.disk_io_counters()
                if d is not None:
                    row["host_disk_read_bytes_total"] = float(d.read_bytes)
                    row["host_disk_write_bytes_total"] = float(d.write_bytes)
                n = psutil.net_io_counters()
                row["host_net_rx_bytes_total"] = float(n.bytes_recv)
                row["host_net_tx_bytes_total"] = float(n.bytes_sent)
                gen = read_proc(me) if group is None else group.read()
                for k, v in (gen or {}).items():
                    row["gen_" + k] = v
                if self.server_pid is not None:
                    if pids is None or t_start - pids_at >= self.tree_refresh_s:
                        pids, pids_at = tree_pids(self.server_pid), t_start
                    tree = read_tree(self.server_pid, pids)
                    if tree is not None and tree["processes"] < len(pids or ()):
                        pids_at = -math.inf  # someone exited: re-scan next time
                    if tree is None:
                        self.server_reason = f"server pid {self.server_pid} not found (exited?)"
                    for k, v in (tree or {}).items():
                        row["server_" + k] = v
                if gpu is not None and gpu.handles:
                    row.update(gpu.read())
                self.cpu_s = time.thread_time() - c0
                row["sampler_cpu_s_total"] = self.cpu_s
                row["sample_s"] = time.perf_counter() - t_start
                self.rows.append(row)
                if self.spool is not None:
                    self.spool.write(row)
                wait = self.interval_s - (time.perf_counter() - t_start)
                if self._stop.wait(max(wait, 0.0)):
                    break
        finally:
            if gpu is not None:
                gpu.close()

    def table(self, t0: float) -> pa.Table:
        """All samples, with ``t`` = seconds from the run's t0 (perf_counter) first."""
        return rows_table(list(self.rows), t0)

    def summary(self) -> dict[str, Any]:
        n = len(self.rows)
        durs = [r["sample_s"] for r in self.rows]
        return {
            "interval_s": self.interval_s, "samples": n, "thread_cpu_s": self.cpu_s,
            "mean_sample_ms": 1e3 * sum(durs) / n if n else None,
            "max_sample_ms": 1e3 * max(durs) if n else None,
            "server_pid": self.server_pid,
            **({"generator_pids": [self.gen_pid, *self.gen_pids],
                "generator": "gen_* columns: the run's parent and its worker processes "
                             "(loadgen.telemetry.sampler.ProcessGroup: the CPU and faults of "
                             "exited workers through the parent's reaped-children account)"}
               if self.gen_pids else {}),
            "server": ({"unavailable": self.server_reason} if self.server_reason
                       else ("sampled" if self.server_pid else {"unavailable": "no --server-pid"})),
            "gpu": {"unavailable": self.gpu_reason} if self.gpu_reason else "sampled via NVML",
        }


def rows_table(rows: list[dict[str, float]], t0: float) -> pa.Table:
    """Sample rows (dicts with ``t_mono``) as telemetry.parquet's table: ``t`` = t_mono - t0
    first, then every column in the order it first appeared (NaN where a row lacks it)."""
    cols: list[str] = []
    seen: set[str] = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    cols = [c for c in cols if c != "t_mono"]
    arrays = [pa.array([r["t_mono"] - t0 for r in rows], pa.float64())]
    arrays += [pa.array([r.get(c, NAN) for r in rows], pa.float64()) for c in cols]
    return pa.Table.from_arrays(arrays, names=["t", *cols])
