"""The environment manifest: the hardware and software a run ran on, each field with its source.

Every section is a dict of fields plus ``sources`` (field -> how it was read). A field that
cannot be read is ``{"unavailable": reason}``; nothing is guessed. Only files, syscalls and
libraries are used (no slow external commands), so collecting it takes well under a second.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from loadgen.manifest import tool_info, unavailable

ENV_VERSION = "1"
PACKAGES = (
    "llm-loadgen", "aiohttp", "httptools", "msgspec", "uvloop", "numpy", "scipy", "orjson",
    "pyarrow", "hdrhistogram",
    "prometheus-client", "psutil", "nvidia-ml-py", "torch", "triton", "transformers",
    "tokenizers", "vllm", "sglang", "llama-cpp-python", "tritonclient", "nvidia-pytriton",
    "datasets", "flash-attn", "xformers",
)
U = dict[str, Any]


class Section:
    """Fields of one section and, beside them, how each was obtained."""

    def __init__(self) -> None:
        self.d: U = {"sources": {}}

    def put(self, name: str, value: Any, source: str) -> None:
        self.d[name] = value
        self.d["sources"][name] = source

    def file(self, name: str, path: str, parse=lambda s: s.strip()) -> None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            self.put(name, unavailable(f"{path} unreadable: {e.strerror or e}"), path)
            return
        try:
            self.put(name, parse(text), path)
        except (ValueError, IndexError, KeyError) as e:
            self.put(name, unavailable(f"{path} not understood: {e}"), path)


def _bracketed(text: str) -> str:
    """'always [madvise] never' -> 'madvise' (the selected mode of a sysfs choice file)."""
    s = text.strip()
    if "[" not in s:
        return s
    return s.split("[", 1)[1].split("]", 1)[0]


def _cpulist(text: str) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _cpuinfo() -> list[dict[str, str]]:
    procs, cur = [], {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if not line.strip():
            if cur:
                procs.append(cur)
            cur = {}
            continue
        k, _, v = line.partition(":")
        cur[k.strip()] = v.strip()
    if cur:
        procs.append(cur)
    return procs


def _meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, _, v = line.partition(":")
        parts = v.split()
        if parts:
            out[k] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def cpu_section() -> U:
    s = Section()
    src = "/proc/cpuinfo"
    try:
        procs = _cpuinfo()
    except OSError as e:
        procs = []
        s.put("model", unavailable(f"/proc/cpuinfo unreadable: {e}"), src)
    if procs:
        p0 = procs[0]
        s.put("model", p0.get("model name") or unavailable("no 'model name' in /proc/cpuinfo"), src)
        flags = p0.get("flags")
        s.put("flags", sorted(flags.split()) if flags else unavailable("no 'flags' line"), src)
        s.put("hypervisor_flag", "hypervisor" in (flags or "").split(), src + " flags")
        if all("physical id" in p for p in procs):
            s.put("sockets", len({p["physical id"] for p in procs}), src + " physical id")
            cores = {(p["physical id"], p.get("core id")) for p in procs}
            s.put("cores", len(cores), src + " (physical id, core id)")
        else:
            s.put("sockets", unavailable("no 'physical id' in /proc/cpuinfo (VM or non-x86)"), src)
            s.put("cores", unavailable("no 'physical id'/'core id' in /proc/cpuinfo"), src)
        s.put("threads", len(procs), src + " processor entries")
        mhz = [float(p["cpu MHz"]) for p in procs if "cpu MHz" in p]
        s.put("mhz_now", {"min": min(mhz), "max": max(mhz)} if mhz
              else unavailable("no 'cpu MHz' in /proc/cpuinfo"), src + " cpu MHz (instantaneous)")
    s.put("logical_cpus", os.cpu_count(), "os.cpu_count()")
    s.put("affinity", sorted(os.sched_getaffinity(0)), "os.sched_getaffinity(0)")
    node_dir = Path("/sys/devices/system/node")
    try:
        nodes = sorted(int(d.name[4:]) for d in node_dir.glob("node[0-9]*"))
        if not nodes:
            raise OSError("no node* directories")
        s.put("numa_nodes", {str(n): _cpulist((node_dir / f"node{n}/cpulist").read_text())
                             for n in nodes}, f"{node_dir}/node*/cpulist")
    except (OSError, ValueError) as e:
        s.put("numa_nodes", unavailable(f"{node_dir} unreadable: {e}"), str(node_dir))
    s.file("governor", "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    s.file("scaling_driver", "/sys/devices/system/cpu/cpu0/cpufreq/scaling_driver")
    s.file("max_freq_khz", "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", int)
    s.file("smt_active", "/sys/devices/system/cpu/smt/active", lambda t: t.strip() == "1")
    return s.d


def memory_section() -> U:
    s = Section()
    try:
        mi = _meminfo()
        s.put("total_bytes", mi["MemTotal"], "/proc/meminfo MemTotal")
        s.put("swap_total_bytes", mi.get("SwapTotal", 0), "/proc/meminfo SwapTotal")
        s.put("swap_free_bytes", mi.get("SwapFree", 0), "/proc/meminfo SwapFree")
        s.put("default_hugepage_bytes", mi.get("Hugepagesize", 0), "/proc/meminfo Hugepagesize")
    except (OSError, KeyError) as e:
        s.put("total_bytes", unavailable(f"/proc/meminfo: {e}"), "/proc/meminfo")
    thp = "/sys/kernel/mm/transparent_hugepage"
    s.file("thp_enabled", f"{thp}/enabled", _bracketed)
    s.file("thp_defrag", f"{thp}/defrag", _bracketed)
    s.file("thp_shmem_enabled", f"{thp}/shmem_enabled", _bracketed)
    s.file("swappiness", "/proc/sys/vm/swappiness", int)
    s.file("overcommit_memory", "/proc/sys/vm/overcommit_memory", int)
    pools: U = {}
    hp = Path("/sys/kernel/mm/hugepages")
    try:
        for d in sorted(hp.iterdir()):
            size_kb = int(d.name.split("-")[1].rstrip("kB"))
            pools[f"{size_kb // 1024}MB" if size_kb < 1 << 20 else f"{size_kb >> 20}GB"] = {
                k: int((d / k).read_text()) for k in
                ("nr_hugepages", "free_hugepages", "resv_hugepages", "surplus_hugepages")}
        s.put("hugepage_pools", pools, f"{hp}/*/nr_hugepages,free_hugepages,...")
    except (OSError, ValueError, IndexError) as e:
        s.put("hugepage_pools", unavailable(f"{hp} unreadable: {e}"), str(hp))
    try:
        mounts = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()
                  if ln.split()[2:3] == ["hugetlbfs"]]
        s.put("hugetlbfs_mounts", mounts, "/proc/mounts type hugetlbfs")
    except OSError as e:
        s.put("hugetlbfs_mounts", unavailable(f"/proc/mounts: {e}"), "/proc/mounts")
    return s.d


def os_section() -> U:
    s = Section()
    s.put("hostname", socket.gethostname(), "socket.gethostname()")
    s.put("machine", platform.machine(), "platform.machine()")
    s.put("kernel_release", platform.release(), "uname -r (platform.release())")
    s.put("kernel_version", platform.version(), "uname -v (platform.version())")
    s.file("kernel_cmdline", "/proc/cmdline")
    try:
        rel = platform.freedesktop_os_release()
        s.put("os_release", rel.get("PRETTY_NAME") or rel.get("NAME"), "/etc/os-release")
    except OSError as e:
        s.put("os_release", unavailable(f"/etc/os-release: {e}"), "/etc/os-release")
    s.file("clocksource", "/sys/devices/system/clocksource/clocksource0/current_clocksource")
    return s.d


def virtualization_section(cpu_flags: Any = None) -> U:
    """Container and VM detection from files only; each indicator is listed."""
    s = Section()
    hints = []
    for path in ("/.dockerenv", "/run/.containerenv"):
        if os.path.exists(path):
            hints.append(path)
    if os.environ.get("container"):
        hints.append(f"$container={os.environ['container']}")
    try:
        cg = Path("/proc/1/cgroup").read_text()
        for word in ("docker", "kubepods", "containerd", "libpod", "lxc"):
            if word in cg:
                hints.append(f"/proc/1/cgroup mentions {word}")
    except OSError:
        pass
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        hints.append("$KUBERNETES_SERVICE_HOST set")
    s.put("container", bool(hints), "files and environment listed in container_indicators")
    s.put("container_indicators", hints, "/.dockerenv, /run/.containerenv, $container, "
          "/proc/1/cgroup, $KUBERNETES_SERVICE_HOST")
    vm_hints = []
    if isinstance(cpu_flags, list) and "hypervisor" in cpu_flags:
        vm_hints.append("cpu flag 'hypervisor'")
    dmi = {}
    for k in ("sys_vendor", "product_name"):
        try:
            dmi[k] = Path(f"/sys/class/dmi/id/{k}").read_text().strip()
        except OSError:
            pass
    known = ("KVM", "QEMU", "VMware", "VirtualBox", "Xen", "Microsoft Corporation", "Amazon EC2",
             "Google", "OpenStack", "Bochs", "Parallels")
    for v in dmi.values():
        if any(k.lower() in v.lower() for k in known):
            vm_hints.append(f"DMI '{v}'")
    s.put("vm", bool(vm_hints), "cpu 'hypervisor' flag and /sys/class/dmi/id")
    s.put("vm_indicators", vm_hints, "cpu 'hypervisor' flag and /sys/class/dmi/id")
    s.put("dmi", dmi or unavailable("/sys/class/dmi/id not readable (container or non-x86)"),
          "/sys/class/dmi/id/{sys_vendor,product_name}")
    return s.d


def _nvml(name: str, *args: Any) -> Any:
    """``pynvml.<name>(*args)``, or ``{"unavailable": reason}`` when this nvidia-ml-py lacks the
    call or NVML refuses it (NotSupported on a MIG slice, NoPermission in a container...)."""
    import pynvml

    fn = getattr(pynvml, name, None)
    if fn is None:
        return unavailable(f"this nvidia-ml-py has no {name}")
    try:
        v = fn(*args)
    except pynvml.NVMLError as e:
        return unavailable(f"NVML {name}: {e}")
    return v.decode() if isinstance(v, bytes) else v


def _attr(v: Any, name: str) -> Any:
    """A field of an NVML struct, passing an ``unavailable`` dict through."""
    if isinstance(v, dict):
        return v
    x = getattr(v, name, None)
    if x is None:
        return unavailable(f"NVML result {type(v).__name__} has no {name}")
    return x.decode() if isinstance(x, bytes) else x


def gpu_section() -> U:
    """GPUs via NVML (nvidia-ml-py): model, driver, CUDA, memory, clocks, power, MIG, topology.

    Fails soft at every level: no library, no driver (nvmlInit fails), a call this library
    version lacks or NVML refuses (that field only), or anything else going wrong while
    listing (the whole section becomes ``{"unavailable": reason}``): a manifest is never lost
    to a GPU query. Tested here with a fake NVML module only (tests/test_telemetry_gpu_fake.py);
    see docs/telemetry.md for what has not been run on a real GPU.
    """
    src = "NVML (nvidia-ml-py)"
    try:
        import pynvml
    except ImportError:
        return {"unavailable": "nvidia-ml-py is not installed (pip install nvidia-ml-py)",
                "source": src}
    try:
        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVMLError, or a broken library: say which
        return {"unavailable": f"NVML could not initialise: {e} (no NVIDIA driver/GPU here)",
                "source": src}
    try:
        return _gpu_devices(pynvml, src)
    except Exception as e:  # noqa: BLE001 - never lose the manifest to a GPU query
        return {"unavailable": f"NVML query failed: {type(e).__name__}: {e}", "source": src}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110 - shutting down: nothing left to report
            pass


def _gpu_devices(pynvml: Any, src: str) -> U:
    n = pynvml.nvmlDeviceGetCount()
    cuda = _nvml("nvmlSystemGetCudaDriverVersion_v2")
    out: U = {
        "source": src,
        "driver_version": _nvml("nvmlSystemGetDriverVersion"),
        "cuda_driver_version": (f"{cuda // 1000}.{cuda % 1000 // 10}"
                                if isinstance(cuda, int) else cuda),
        "nvml_version": _nvml("nvmlSystemGetNVMLVersion"),
        "count": n,
        "devices": [],
    }
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
    for i, h in enumerate(handles):
        mem = _nvml("nvmlDeviceGetMemoryInfo", h)
        mig = _nvml("nvmlDeviceGetMigMode", h)
        mig_on = isinstance(mig, list | tuple) and bool(mig[0])
        out["devices"].append({
            "index": i,
            "name": _nvml("nvmlDeviceGetName", h),
            "uuid": _nvml("nvmlDeviceGetUUID", h),
            "pci_bus_id": _attr(_nvml("nvmlDeviceGetPciInfo", h), "busId"),
            "memory_total_bytes": _attr(mem, "total"),
            "max_clock_sm_mhz": _nvml("nvmlDeviceGetMaxClockInfo", h, pynvml.NVML_CLOCK_SM),
            "max_clock_mem_mhz": _nvml("nvmlDeviceGetMaxClockInfo", h, pynvml.NVML_CLOCK_MEM),
            "app_clock_sm_mhz": _nvml("nvmlDeviceGetApplicationsClock", h, pynvml.NVML_CLOCK_SM),
            "power_limit_w": _scale(_nvml("nvmlDeviceGetPowerManagementLimit", h), 1e-3),
            "persistence_mode": _nvml("nvmlDeviceGetPersistenceMode", h),
            "compute_mode": _nvml("nvmlDeviceGetComputeMode", h),
            "vbios": _nvml("nvmlDeviceGetVbiosVersion", h),
            "ecc_mode": _nvml("nvmlDeviceGetEccMode", h),
            "mig_mode": ({"current": mig[0], "pending": mig[1]}
                         if isinstance(mig, list | tuple) else mig),
            "mig_instances": _mig_instances(h) if mig_on else [],
        })
    out["topology"] = {f"{i}-{j}": _nvml("nvmlDeviceGetTopologyCommonAncestor", handles[i],
                                         handles[j])
                       for i in range(n) for j in range(i + 1, n)}
    out["topology_levels"] = "0 internal, 10 single PCIe switch, 20 multiple switches, " \
        "30 host bridge, 40 same NUMA node, 50 across sockets (nvmlGpuTopologyLevel_t)"
    return out


def _scale(v: Any, k: float) -> Any:
    return v * k if isinstance(v, int | float) else v


def _mig_instances(h: Any) -> list[U]:
    """The MIG devices of a GPU in MIG mode (slots without an instance are skipped)."""
    out = []
    count = _nvml("nvmlDeviceGetMaxMigDeviceCount", h)
    for j in range(count if isinstance(count, int) else 0):
        m = _nvml("nvmlDeviceGetMigDeviceHandleByIndex", h, j)
        if isinstance(m, dict):  # NotFound: no instance in this slot
            continue
        out.append({"index": j, "uuid": _nvml("nvmlDeviceGetUUID", m),
                    "name": _nvml("nvmlDeviceGetName", m),
                    "gpu_instance_id": _nvml("nvmlDeviceGetGpuInstanceId", m),
                    "compute_instance_id": _nvml("nvmlDeviceGetComputeInstanceId", m),
                    "memory_total_bytes": _attr(_nvml("nvmlDeviceGetMemoryInfo", m), "total")})
    return out


def python_section() -> U:
    s = Section()
    s.put("version", sys.version.split()[0], "sys.version")
    s.put("implementation", platform.python_implementation(), "platform")
    s.put("executable", sys.executable, "sys.executable")
    s.put("virtualenv", sys.prefix != sys.base_prefix, "sys.prefix != sys.base_prefix")
    pk: U = {}
    for p in PACKAGES:
        try:
            pk[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pk[p] = unavailable("not installed")
    s.put("packages", pk, "importlib.metadata.version")
    return s.d


def environment() -> U:
    """The full environment manifest of this machine and process (well under 1 s)."""
    t = time.perf_counter()
    cpu = cpu_section()
    env: U = {
        "env_version": ENV_VERSION,
        "cpu": cpu,
        "memory": memory_section(),
        "os": os_section(),
        "virtualization": virtualization_section(cpu.get("flags")),
        "gpu": gpu_section(),
        "python": python_section(),
        "tool": tool_info(),
    }
    env["collect_s"] = time.perf_counter() - t
    return env
