"""The GPU paths fail soft. This machine has no GPU, so NVML is a fake module here (the real
nvidia-ml-py API names and shapes, values made up) and the device copies of the memcpy probe
are made to fail with CPU-only torch; docs/telemetry.md lists what never ran on a real GPU."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest

from loadgen.telemetry.env import gpu_section
from loadgen.telemetry.sampler import GpuReader


class NVMLError(Exception):
    pass


def fake_nvml(*, init_error: bool = False, mig: bool = False, missing: tuple[str, ...] = (),
              refuse: tuple[str, ...] = (), count_error: bool = False) -> types.ModuleType:
    """A pynvml with two GPUs (the second in MIG mode when ``mig``), calls in ``missing``
    absent (an older nvidia-ml-py) and calls in ``refuse`` raising NVMLError (NotSupported)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    state = {"init": 0, "shutdown": 0}
    m.state = state

    def init():
        if init_error:
            raise NVMLError("Driver Not Loaded")
        state["init"] += 1

    def count():
        if count_error:
            raise NVMLError("Unknown Error")
        return 2

    calls = {
        "nvmlInit": init,
        "nvmlShutdown": lambda: state.__setitem__("shutdown", state["shutdown"] + 1),
        "nvmlDeviceGetCount": count,
        "nvmlSystemGetDriverVersion": lambda: b"550.54.15",
        "nvmlSystemGetCudaDriverVersion_v2": lambda: 12040,
        "nvmlSystemGetNVMLVersion": lambda: "12.550.54.15",
        "nvmlDeviceGetHandleByIndex": lambda i: ("gpu", i),
        "nvmlDeviceGetName": lambda h: f"NVIDIA H100 80GB HBM3 #{h[1]}" if h[0] == "gpu"
        else "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
        "nvmlDeviceGetUUID": lambda h: f"GPU-{h[1]}" if h[0] == "gpu" else f"MIG-{h[2]}",
        "nvmlDeviceGetPciInfo": lambda h: SimpleNamespace(busId=f"00000000:{h[1] + 1:02X}:00.0".encode()),
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(total=80 << 30 if h[0] == "gpu" else 10 << 30,
                                                             used=1 << 30, free=79 << 30),
        "nvmlDeviceGetMaxClockInfo": lambda h, c: 1980 if c == 1 else 2619,
        "nvmlDeviceGetApplicationsClock": lambda h, c: 1755,
        "nvmlDeviceGetPowerManagementLimit": lambda h: 700000,
        "nvmlDeviceGetPersistenceMode": lambda h: 1,
        "nvmlDeviceGetComputeMode": lambda h: 0,
        "nvmlDeviceGetVbiosVersion": lambda h: "96.00.99.00.01",
        "nvmlDeviceGetEccMode": lambda h: [1, 1],
        "nvmlDeviceGetMigMode": lambda h: [1, 1] if (mig and h[1] == 1) else [0, 0],
        "nvmlDeviceGetMaxMigDeviceCount": lambda h: 7,
        "nvmlDeviceGetTopologyCommonAncestor": lambda a, b: 10,
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=87, memory=40),
        "nvmlDeviceGetPowerUsage": lambda h: 412500,
        "nvmlDeviceGetClockInfo": lambda h, c: 1755 if c == 1 else 2619,
        "nvmlDeviceGetTemperature": lambda h, t: 61,
        "nvmlDeviceGetCurrentClocksEventReasons": lambda h: 4,
        "nvmlDeviceGetGpuInstanceId": lambda h: 3 + h[2],
        "nvmlDeviceGetComputeInstanceId": lambda h: 0,
    }

    def mig_handle(h, j):
        if j >= 2:  # 7 slots, 2 instances created
            raise NVMLError("Not Found")
        return ("mig", h[1], j)

    calls["nvmlDeviceGetMigDeviceHandleByIndex"] = mig_handle

    def refused(name):
        def f(*a):
            raise NVMLError(f"Not Supported ({name})")
        return f

    for name, fn in calls.items():
        if name in missing:
            continue
        setattr(m, name, refused(name) if name in refuse else fn)
    return m


@pytest.fixture
def install(monkeypatch):
    def put(mod):
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        return mod
    return put


def test_manifest_lists_gpus_mig_instances_and_topology(install):
    nv = install(fake_nvml(mig=True))
    g = gpu_section()
    assert g["count"] == 2 and g["driver_version"] == "550.54.15"
    assert g["cuda_driver_version"] == "12.4"
    d0, d1 = g["devices"]
    assert d0["name"] == "NVIDIA H100 80GB HBM3 #0" and d0["pci_bus_id"] == "00000000:01:00.0"
    assert d0["memory_total_bytes"] == 80 << 30 and d0["power_limit_w"] == 700.0
    assert d0["mig_mode"] == {"current": 0, "pending": 0} and d0["mig_instances"] == []
    assert d1["mig_mode"] == {"current": 1, "pending": 1}
    assert [(i["uuid"], i["gpu_instance_id"], i["memory_total_bytes"]) for i in
            d1["mig_instances"]] == [("MIG-0", 3, 10 << 30), ("MIG-1", 4, 10 << 30)]
    assert g["topology"] == {"0-1": 10}
    assert nv.state == {"init": 1, "shutdown": 1}


def test_a_refused_or_missing_call_is_unavailable_for_that_field_only(install):
    install(fake_nvml(refuse=("nvmlDeviceGetPowerManagementLimit", "nvmlDeviceGetPciInfo"),
                      missing=("nvmlSystemGetCudaDriverVersion_v2",)))
    g = gpu_section()
    d0 = g["devices"][0]
    assert d0["power_limit_w"] == {"unavailable": "NVML nvmlDeviceGetPowerManagementLimit: "
                                   "Not Supported (nvmlDeviceGetPowerManagementLimit)"}
    assert "unavailable" in d0["pci_bus_id"]
    assert g["cuda_driver_version"] == {
        "unavailable": "this nvidia-ml-py has no nvmlSystemGetCudaDriverVersion_v2"}
    assert d0["name"] == "NVIDIA H100 80GB HBM3 #0"  # the rest is still there


@pytest.mark.parametrize(("kw", "needle"), [
    ({"init_error": True}, "NVML could not initialise: Driver Not Loaded"),
    ({"count_error": True}, "NVML query failed: NVMLError: Unknown Error"),
])
def test_no_driver_or_a_failing_listing_makes_the_section_unavailable(install, kw, needle):
    nv = install(fake_nvml(**kw))
    g = gpu_section()
    assert set(g) == {"unavailable", "source"} and needle in g["unavailable"]
    if not kw.get("init_error"):
        assert nv.state["shutdown"] == 1  # NVML is shut down after a failed query


def test_missing_library_is_unavailable_with_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert "pip install nvidia-ml-py" in gpu_section()["unavailable"]
    assert GpuReader().reason == "nvidia-ml-py is not installed"


def test_sampler_reads_every_gpu_and_nan_where_nvml_refuses(install):
    install(fake_nvml(refuse=("nvmlDeviceGetPowerUsage",),
                      missing=("nvmlDeviceGetCurrentClocksEventReasons",)))
    r = GpuReader()
    assert r.reason is None and len(r.handles) == 2
    row = r.read()
    assert row["gpu0_util_pct"] == 87 and row["gpu1_mem_util_pct"] == 40
    assert row["gpu0_mem_used_bytes"] == 1 << 30 and row["gpu0_sm_clock_mhz"] == 1755
    assert row["gpu0_temp_c"] == 61
    assert row["gpu0_power_w"] != row["gpu0_power_w"]  # NaN: refused
    assert row["gpu1_throttle_reasons"] != row["gpu1_throttle_reasons"]  # NaN: no such call
    r.close()


def test_sampler_falls_back_to_the_older_throttle_reasons_call(install):
    nv = fake_nvml(missing=("nvmlDeviceGetCurrentClocksEventReasons",))
    nv.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 1
    install(nv)
    assert GpuReader().read()["gpu0_throttle_reasons"] == 1.0


def test_sampler_without_a_driver_says_why(install):
    install(fake_nvml(init_error=True))
    r = GpuReader()
    assert r.handles == [] and r.reason == "NVML could not initialise: Driver Not Loaded"
    assert r.read() == {}


def test_sampler_summary_names_the_gpu_reason_from_a_run(install):
    import time

    from loadgen.telemetry.sampler import Sampler

    install(fake_nvml())
    s = Sampler(interval_s=0.02).start()
    time.sleep(0.1)
    s.stop()
    assert s.summary()["gpu"] == "sampled via NVML"
    assert s.table(0.0).column("gpu1_util_pct").to_pylist()[0] == 87.0


def test_memcpy_device_copies_that_fail_are_recorded_not_raised(monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a real GPU is here: the probe measures it")
    from loadgen.telemetry.probe_memcpy import measure, render

    # pretend CUDA is there: CPU-only torch then fails on the first device tensor
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    rows, notes = measure([1 << 20], 1, device=True, variants=("4k",))
    assert rows and all(r["status"] == "failed" for r in rows)
    assert all("device copy failed" in r["reason"] for r in rows)
    assert notes["device"] == {"failed": "every device copy failed; see device_errors"}
    assert set(notes["device_errors"]) == {"4k/1048576", "torch_pinned/1048576"}
    assert "device copies FAILED" in render(rows, notes)
