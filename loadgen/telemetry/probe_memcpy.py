"""``loadgen probe memcpy``: copy bandwidth by host page size, pageable and pinned.

Host buffers are anonymous mmaps in four variants:
    4k         madvise(MADV_NOHUGEPAGE): base 4 KB pages only
    thp2m      2 MB-aligned, madvise(MADV_HUGEPAGE): transparent huge pages where the kernel
               can find them (thp_enabled 'madvise' or 'always')
    hugetlb2m  mmap(MAP_HUGETLB | MAP_HUGE_2MB): the reserved 2 MB pool
    hugetlb1g  mmap(MAP_HUGETLB | MAP_HUGE_1GB): the reserved 1 GB pool
Each buffer's real backing is read back from /proc/self/smaps (KernelPageSize, AnonHugePages)
and stored beside its result, so a THP request the kernel did not honour is visible.

With torch on CUDA: host->device and device->host copies, pageable (``tensor.copy_``) and
pinned (the same mmap registered with cudaHostRegister, plus torch's own pinned allocator),
timed with CUDA events. Without: host->host ``numpy.copyto`` between two buffers of the same
variant, and the device copies are recorded as skipped with the reason.
Bandwidth = bytes / time, in GB/s (1e9 bytes/s); median and best of ``repeats``.
"""

from __future__ import annotations

import ctypes
import mmap
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loadgen.manifest import write_json_atomic

MAP_HUGETLB = 0x40000
MAP_HUGE_SHIFT = 26
MB2, GB1 = 2 << 20, 1 << 30
VARIANTS = ("4k", "thp2m", "hugetlb2m", "hugetlb1g")


class HostBuffer:
    """An anonymous mmap of one page-size variant; ``array`` is a uint8 view of ``size``."""

    def __init__(self, variant: str, size: int) -> None:
        self.variant, self.size = variant, size
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        if variant == "hugetlb2m":
            length = -(-size // MB2) * MB2
            flags |= MAP_HUGETLB | (21 << MAP_HUGE_SHIFT)
        elif variant == "hugetlb1g":
            length = -(-size // GB1) * GB1
            flags |= MAP_HUGETLB | (30 << MAP_HUGE_SHIFT)
        elif variant == "thp2m":
            length = -(-size // MB2) * MB2 + MB2  # room to align the start to 2 MB
        elif variant == "4k":
            length = size
        else:
            raise ValueError(f"variant {variant!r} unknown; use one of {', '.join(VARIANTS)}")
        try:
            self.mm = mmap.mmap(-1, length, flags=flags)
        except OSError as e:
            pool = "2048kB" if variant == "hugetlb2m" else "1048576kB"
            hint = (f" (is the pool empty? see /sys/kernel/mm/hugepages/hugepages-{pool}/"
                    "nr_hugepages)" if variant.startswith("hugetlb") else "")
            raise OSError(e.errno, f"mmap of {length} bytes for {variant} failed: "
                          f"{e.strerror}{hint}") from None
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        offset = 0
        if variant == "thp2m":
            offset = (-base) % MB2
            self.mm.madvise(mmap.MADV_HUGEPAGE, offset, length - offset - ((length - offset) % MB2))
        elif variant == "4k":
            self.mm.madvise(mmap.MADV_NOHUGEPAGE)
        self.address = base + offset
        self.array = np.frombuffer(self.mm, dtype=np.uint8, count=size, offset=offset)
        self.array[:] = 1  # fault every page in before timing

    def backing(self) -> dict[str, Any]:
        return smaps_backing(self.address)

    def close(self) -> None:
        self.array = None  # type: ignore[assignment]
        try:
            self.mm.close()
        except BufferError:
            pass  # a view is still alive (torch); the mapping goes with the process


def smaps_backing(address: int) -> dict[str, Any]:
    """KernelPageSize, Rss and AnonHugePages of the mapping that contains ``address``."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError as e:
        return {"unavailable": f"/proc/self/smaps: {e}"}
    inside = False
    out: dict[str, Any] = {}
    for line in lines:
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            if inside:
                break
            inside = lo <= address < hi
            continue
        if inside:
            k, _, v = line.partition(":")
            if k in ("KernelPageSize", "Rss", "AnonHugePages", "Size"):
                out[k + "_kb"] = int(v.split()[0])
    return out or {"unavailable": f"no mapping contains {address:#x} in /proc/self/smaps"}


def _stats(times: list[float], size: int) -> dict[str, float]:
    med, best = statistics.median(times), min(times)
    return {"median_s": med, "min_s": best, "gbps_median": size / med / 1e9,
            "gbps_best": size / best / 1e9}


def host_copy(variant: str, size: int, repeats: int) -> dict[str, Any]:
    src, dst = HostBuffer(variant, size), HostBuffer(variant, size)
    try:
        np.copyto(dst.array, src.array)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            np.copyto(dst.array, src.array)
            times.append(time.perf_counter() - t)
        return {**_stats(times, size), "backing_src": src.backing(), "backing_dst": dst.backing()}
    finally:
        src.close()
        dst.close()


def device_reason() -> str | None:
    """None when torch can copy to a CUDA device, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install torch with CUDA)"
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} is installed but torch.cuda.is_available() is False "
                f"(CUDA build: {torch.version.cuda or 'none'}; no CUDA device or driver)")
    return None


def device_copies(variant: str, size: int, repeats: int) -> list[dict[str, Any]]:
    """H2D and D2H, pageable and pinned (cudaHostRegister of the same mmap), CUDA events."""
    import torch

    out = []
    buf = HostBuffer(variant, size)
    offset = buf.address - ctypes.addressof(ctypes.c_char.from_buffer(buf.mm))
    host = torch.frombuffer(buf.mm, dtype=torch.uint8, count=size, offset=offset)
    dev = torch.empty(size, dtype=torch.uint8, device="cuda")
    cudart = torch.cuda.cudart()
    registered = False
    try:
        for pinned in (False, True):
            if pinned:
                err = cudart.cudaHostRegister(host.data_ptr(), size, 0)
                if int(err) != 0:
                    out.append({"pinned": True, "status": "failed",
                                "reason": f"cudaHostRegister returned {err}"})
                    continue
                registered = True
            for direction in ("h2d", "d2h"):
                a, b = (dev, host) if direction == "h2d" else (host, dev)
                a.copy_(b, non_blocking=pinned)
                torch.cuda.synchronize()
                times = []
                for _ in range(repeats):
                    e0 = torch.cuda.Event(enable_timing=True)
                    e1 = torch.cuda.Event(enable_timing=True)
                    e0.record()
                    a.copy_(b, non_blocking=pinned)
                    e1.record()
                    e1.synchronize()
                    times.append(e0.elapsed_time(e1) / 1e3)
                out.append({"pinned": pinned, "direction": direction, "status": "ok",
                            **_stats(times, size), "backing_src": buf.backing()})
    finally:
        if registered:
            cudart.cudaHostUnregister(host.data_ptr())
        del host, dev
        buf.close()
    return out


def torch_pinned_copies(size: int, repeats: int) -> list[dict[str, Any]]:
    """torch's own pinned allocator (cudaHostAlloc) as a reference."""
    import torch

    host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(size, dtype=torch.uint8, device="cuda")
    out = []
    for direction in ("h2d", "d2h"):
        a, b = (dev, host) if direction == "h2d" else (host, dev)
        times = []
        for _ in range(repeats + 1):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            a.copy_(b, non_blocking=True)
            e1.record()
            e1.synchronize()
            times.append(e0.elapsed_time(e1) / 1e3)
        out.append({"variant": "torch_pinned", "pinned": True, "direction": direction,
                    "status": "ok", **_stats(times[1:], size)})
    return out


def measure(sizes: list[int], repeats: int, device: bool = True,
            variants: tuple[str, ...] = VARIANTS) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All result rows, and notes (why device copies or variants were skipped)."""
    rows: list[dict[str, Any]] = []
    reason = device_reason() if device else "device copies disabled (--no-device)"
    notes: dict[str, Any] = {"device": "measured" if reason is None else {"skipped": reason}}
    for variant in variants:
        for size in sizes:
            base = {"variant": variant, "size_bytes": size, "repeats": repeats}
            try:
                if reason is None:
                    rows += [{**base, **r} for r in device_copies(variant, size, repeats)]
                else:
                    rows.append({**base, "pinned": False, "direction": "h2h", "status": "ok",
                                 **host_copy(variant, size, repeats)})
            except OSError as e:
                rows.append({**base, "direction": "h2h" if reason else "h2d", "status": "failed",
                             "reason": str(e)})
                notes.setdefault("failed_variants", {})[variant] = str(e)
                break  # the same failure for every size
            except Exception as e:  # noqa: BLE001 - a CUDA error: say it, measure the rest
                if reason is not None:
                    raise
                msg = _device_error(e)
                rows.append({**base, "direction": "h2d", "status": "failed", "reason": msg})
                notes.setdefault("device_errors", {})[f"{variant}/{size}"] = msg
    if reason is None:
        for size in sizes:
            try:
                rows += [{"size_bytes": size, "repeats": repeats, **r}
                         for r in torch_pinned_copies(size, repeats)]
            except Exception as e:  # noqa: BLE001 - as above
                msg = _device_error(e)
                rows.append({"variant": "torch_pinned", "size_bytes": size, "repeats": repeats,
                             "pinned": True, "direction": "h2d", "status": "failed",
                             "reason": msg})
                notes.setdefault("device_errors", {})[f"torch_pinned/{size}"] = msg
    if reason is None and notes.get("device_errors") and not any(
            r.get("status") == "ok" and r.get("direction") in ("h2d", "d2h") for r in rows):
        notes["device"] = {"failed": "every device copy failed; see device_errors"}
    return rows, notes


def _device_error(e: BaseException) -> str:
    return f"device copy failed: {type(e).__name__}: {str(e)[:300]}"


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    cols = ("variant", "pinned", "direction", "size_bytes", "repeats", "status", "reason",
            "median_s", "min_s", "gbps_median", "gbps_best", "src_kernel_page_kb",
            "src_anon_huge_kb")
    data: dict[str, list] = {c: [] for c in cols}
    for r in rows:
        b = r.get("backing_src") or {}
        for c in cols:
            if c == "src_kernel_page_kb":
                data[c].append(b.get("KernelPageSize_kb"))
            elif c == "src_anon_huge_kb":
                data[c].append(b.get("AnonHugePages_kb"))
            else:
                data[c].append(r.get(c))
    return pa.table(data)


def render(rows: list[dict[str, Any]], notes: dict[str, Any]) -> str:
    lines = [f"{'variant':12s} {'pin':4s} {'dir':4s} {'size':>10s} {'GB/s med':>9s} "
             f"{'GB/s best':>9s}  backing"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r.get('variant', ''):12s} {'':4s} {r.get('direction', ''):4s} "
                         f"{r['size_bytes']:>10d} FAILED: {r.get('reason')}")
            continue
        b = r.get("backing_src") or {}
        back = (f"page {b.get('KernelPageSize_kb')} kB, THP {b.get('AnonHugePages_kb')} kB"
                if "KernelPageSize_kb" in b else "")
        lines.append(f"{r['variant']:12s} {'yes' if r.get('pinned') else 'no':4s} "
                     f"{r['direction']:4s} {r['size_bytes']:>10d} {r['gbps_median']:9.2f} "
                     f"{r['gbps_best']:9.2f}  {back}")
    dev = notes["device"]
    if isinstance(dev, dict) and "skipped" in dev:
        lines.append(f"device copies SKIPPED: {dev['skipped']}; host-to-host copies shown")
    elif isinstance(dev, dict):
        lines.append(f"device copies FAILED: {dev.get('failed')}: "
                     f"{next(iter((notes.get('device_errors') or {}).values()), '')}")
    return "\n".join(lines)


def run_probe(result_dir: Path, run_name: str | None, sizes: list[int], repeats: int,
              device: bool = True, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """Measure and write RESULT_DIR/NAME/{manifest.json, results.json, results.parquet}."""
    from loadgen.manifest import tool_info
    from loadgen.telemetry.env import environment

    name = run_name or "probe-memcpy-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    d = Path(result_dir) / name
    d.mkdir(parents=True, exist_ok=False)
    manifest = {"kind": "llm-loadgen probe memcpy", "status": "running",
                "created_utc": datetime.now(UTC).isoformat(), "tool": tool_info(),
                "config": {"sizes_bytes": sizes, "repeats": repeats, "device": device,
                           "variants": list(variants)},
                "environment": environment()}
    write_json_atomic(d / "manifest.json", manifest)
    rows, notes = measure(sizes, repeats, device, variants)
    write_json_atomic(d / "results.json", {"notes": notes, "rows": rows})
    pq.write_table(_table(rows), d / "results.parquet")
    manifest.update(status="complete", notes=notes,
                    files={"results.json": "all rows with notes", "results.parquet": "flat rows"})
    write_json_atomic(d / "manifest.json", manifest)
    return {"run_dir": d, "rows": rows, "notes": notes, "text": render(rows, notes)}
