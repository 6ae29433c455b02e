"""`loadgen probe memcpy`: the host path (small sizes) and honest reports of what was skipped."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from loadgen.telemetry.probe_memcpy import HostBuffer, device_reason, run_probe, smaps_backing

SIZES = [64 << 10, 1 << 20]


def _pool(size: str) -> int:
    return int(Path(f"/sys/kernel/mm/hugepages/hugepages-{size}/nr_hugepages").read_text())


def test_host_copies_per_variant_and_files(tmp_path):
    out = run_probe(tmp_path, "p", SIZES, repeats=2, device=False,
                    variants=("4k", "thp2m", "hugetlb2m"))
    rows = out["rows"]
    ok4k = [r for r in rows if r["variant"] == "4k"]
    assert [r["size_bytes"] for r in ok4k] == SIZES
    assert all(r["status"] == "ok" and r["direction"] == "h2h" and r["gbps_median"] > 0.1
               for r in ok4k)
    assert all(r["backing_src"]["KernelPageSize_kb"] == 4 for r in ok4k)
    assert all(r["backing_src"].get("AnonHugePages_kb", 0) == 0 for r in ok4k)
    huge = [r for r in rows if r["variant"] == "hugetlb2m"]
    if _pool("2048kB") == 0:
        assert len(huge) == 1 and huge[0]["status"] == "failed"
        assert "nr_hugepages" in huge[0]["reason"]
        assert "hugetlb2m" in out["notes"]["failed_variants"]
    else:
        assert all(r["backing_src"]["KernelPageSize_kb"] == 2048 for r in huge)
    assert out["notes"]["device"] == {"skipped": "device copies disabled (--no-device)"}
    d = tmp_path / "p"
    m = orjson.loads((d / "manifest.json").read_bytes())
    assert m["status"] == "complete" and "memory" in m["environment"]
    assert pq.read_table(d / "results.parquet").num_rows == len(rows)
    assert "SKIPPED" in out["text"]


def test_thp_buffers_are_backed_by_huge_pages_when_thp_is_allowed():
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    if "[never]" in mode:
        pytest.skip("transparent huge pages are disabled here")
    b = HostBuffer("thp2m", 4 << 20)
    try:
        assert b.address % (2 << 20) == 0
        # the kernel may fall back to 4 KB pages under memory fragmentation; it says so here
        assert smaps_backing(b.address).get("AnonHugePages_kb", 0) >= 2048
    finally:
        b.close()


def test_1g_pages_fail_with_the_pool_named_when_none_are_reserved():
    if _pool("1048576kB") > 0:
        pytest.skip("a 1 GB pool is reserved here")
    with pytest.raises(OSError, match="hugepages-1048576kB/nr_hugepages"):
        HostBuffer("hugetlb1g", 1 << 20)


def test_device_copies_are_measured_or_the_reason_is_given():
    reason = device_reason()
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    assert (reason is None) == has_cuda
    if reason is not None:
        assert "torch" in reason
