"""Crash safety: a killed generator, a full disk, an unwritable folder, SIGTERM (issue 8).

The in-run records are an Arrow IPC stream (loadgen/stream_table.py) converted to Parquet at
close; a run left behind by a dead generator is recovered by analysis.load.load_run.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pyarrow as pa
import pytest

from analysis.load import load_run
from loadgen.records import SCHEMA, Record, RecordWriter
from loadgen.stream_table import StreamTableWriter, finalize, salvage, segments, writer_alive

LOADGEN = [sys.executable, "-m", "loadgen"]
SCHEMA_SMALL = pa.schema([("x", pa.int64())])


def _batch(lo: int, n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"x": list(range(lo, lo + n))}, schema=SCHEMA_SMALL)


# -- the stream on its own -----------------------------------------------------------------

def test_a_torn_last_batch_is_dropped_and_the_rest_recovered(tmp_path):
    pq_path = tmp_path / "t.parquet"
    w = StreamTableWriter(pq_path, SCHEMA_SMALL)
    for k in range(3):
        w.append(_batch(10 * k, 10))
    w._file.close()  # the process "dies": no end-of-stream marker, the lock is gone
    stream = segments(pq_path)[0]
    with open(stream, "r+b") as f:  # and its last write was cut short
        f.truncate(stream.stat().st_size - 7)
    got = salvage(pq_path)
    assert got.table.column("x").to_pylist() == list(range(20))
    assert got.batches == 2 and not got.clean_end and "torn batch" in got.error
    assert finalize(pq_path) == 20 and not segments(pq_path)
    assert pa.parquet.read_table(pq_path).num_rows == 20


def test_a_failed_append_is_cut_back_and_the_next_one_starts_a_new_segment(tmp_path):
    pq_path = tmp_path / "t.parquet"
    w = StreamTableWriter(pq_path, SCHEMA_SMALL)
    w.append(_batch(0, 5))
    real = w._writer

    class Full:  # writes half a batch, then the disk is full
        def write_batch(self, b):
            w._file.write(b"\x00" * 37)
            raise OSError(errno.ENOSPC, "No space left on device")

    w._writer = Full()
    with pytest.raises(OSError, match="No space"):
        w.append(_batch(5, 5))
    del real
    w.append(_batch(10, 5))  # space is back: a new segment
    assert [p.name for p in segments(pq_path)] == ["t.arrows", "t.arrows.1"]
    w.close()
    assert pa.parquet.read_table(pq_path).column("x").to_pylist() == [*range(5), *range(10, 15)]


def test_a_live_run_is_read_as_a_snapshot_and_left_untouched(tmp_path):
    (tmp_path / "manifest.json").write_bytes(orjson.dumps({"status": "running"}))
    w = RecordWriter(tmp_path / "requests.parquet", flush_rows=1)
    for i in range(3):
        w.add(Record(request_id=i, status="ok"))
    w._pool.submit(lambda: None).result()  # the records thread has written them
    try:
        assert writer_alive(tmp_path / "requests.parquet")
        run = load_run(tmp_path)
        assert run.requests.num_rows == 3 and run.manifest["status"] == "running"
        assert not (tmp_path / "requests.parquet").exists()
        assert orjson.loads((tmp_path / "manifest.json").read_bytes())["status"] == "running"
    finally:
        w.close()
    assert pa.parquet.read_table(tmp_path / "requests.parquet").num_rows == 3
    assert not segments(tmp_path / "requests.parquet")


def test_a_write_error_is_kept_retried_and_the_rows_not_lost(tmp_path):
    w = RecordWriter(tmp_path / "requests.parquet", flush_rows=2)
    real = w._stream.append
    calls = []

    def flaky(table):
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(table)

    w._stream.append = flaky
    for i in range(6):
        w.add(Record(request_id=i, status="ok"))
    w.close()
    assert isinstance(w.error, OSError) and w.n_lost == 0
    assert calls == [2, 2, 4]  # the failed rows went again with the next flush
    ids = pa.parquet.read_table(tmp_path / "requests.parquet").column("request_id").to_pylist()
    assert sorted(ids) == list(range(6))


# -- a killed generator, end to end --------------------------------------------------------

def _start_run(url: str, tmp: Path, name: str, *extra: str, n: int = 400) -> subprocess.Popen:
    return subprocess.Popen(
        [*LOADGEN, "run", "--base-url", url, "--model", "sim-llm", "--request-rate", "20",
         "--num-prompts", str(n), "--random-input-len", "10", "--random-output-len", "40",
         "--result-dir", str(tmp), "--run-name", name, "--no-progress", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.e2e
def test_sigkill_leaves_a_run_that_summary_and_report_recover(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "5")
    proc = _start_run(srv.base_url, tmp_path, "k")
    run_dir = tmp_path / "k"
    _wait_for(lambda: (run_dir / "requests.arrows").exists(), proc)
    time.sleep(3.0)  # ~60 requests sent, flushed about once a second
    proc.kill()
    proc.communicate(timeout=10)
    assert {p.name for p in run_dir.iterdir()} >= {"manifest.json", "requests.arrows"}
    assert not (run_dir / "requests.parquet").exists()
    assert orjson.loads((run_dir / "manifest.json").read_bytes())["status"] == "running"

    p = subprocess.run([*LOADGEN, "summary", str(run_dir), "--json"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1, p.stderr  # an error exit: the run did not finish
    s = orjson.loads(p.stdout)
    assert s["validity"]["verdict"] == "PARTIAL" and 20 <= s["counts"]["recorded"] < 400
    assert "generator's death" in s["validity"]["reasons"][0]
    m = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert (m["status"], m["interrupted_by"]) == ("partial", "killed")
    assert m["recovery"]["requests_recovered"] == s["counts"]["recorded"]
    assert (run_dir / "requests.parquet").exists() and not (run_dir / "requests.arrows").exists()
    assert (run_dir / "timeseries.parquet").exists()  # streamed too

    p = subprocess.run([*LOADGEN, "report", str(run_dir), "-o", str(tmp_path / "rep")],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    assert b"PARTIAL" in (tmp_path / "rep" / "report.html").read_bytes()


# -- full disk, unwritable folder ----------------------------------------------------------

@pytest.fixture
def tiny_fs(tmp_path):
    """``tiny_fs(mib)``: a tmpfs of that size (root only; skipped where mounting is refused)."""
    mounted: list[Path] = []

    def make(mib: int) -> Path:
        d = tmp_path / f"fs{len(mounted)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_too_little_space_is_a_clear_error_before_the_run(start_sim, tiny_fs):
    fs = tiny_fs(2)
    p = subprocess.run([*LOADGEN, "run", "--base-url", "http://127.0.0.1:9", "--model", "m",
                        "--num-prompts", "1000", "--result-dir", str(fs)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "MiB free, but this run's records may need up to" in p.stderr
    assert "preflight" not in p.stderr  # refused before even contacting the server
    assert list(fs.iterdir()) == []


def test_an_unwritable_result_dir_is_a_clear_error_before_the_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = subprocess.run([*LOADGEN, "run", "--base-url", "http://127.0.0.1:9", "--model", "m",
                        "--result-dir", str(blocker / "runs")], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1 and "cannot create it" in p.stderr and str(blocker) in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.e2e
def test_a_disk_that_fills_during_the_run_stops_it_with_readable_files(start_sim, tiny_fs):
    fs = tiny_fs(48)  # room for the pre-run estimate (~33 MiB), then filled up mid-run
    srv = start_sim("--step-base-ms", "5")
    proc = _start_run(srv.base_url, fs, "full", "--no-telemetry")
    run_dir = fs / "full"
    _wait_for(lambda: (run_dir / "requests.arrows").exists(), proc)
    time.sleep(3.0)  # ~60 sent, two or three flushes
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # take every free byte
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "cannot write records" in err and "Traceback" not in err
    assert not list(run_dir.glob("*.tmp"))  # no half-written file left behind
    stream_rows = salvage(run_dir / "requests.parquet").table.num_rows
    assert stream_rows >= 10  # what was flushed before the disk filled is readable
    filler.unlink()  # space again: the run is recovered and summarised
    p = subprocess.run([*LOADGEN, "summary", str(run_dir), "--json"], capture_output=True,
                       text=True, timeout=60)
    s = orjson.loads(p.stdout)
    assert p.returncode == 1 and s["validity"]["verdict"] == "PARTIAL"
    assert s["counts"]["recorded"] >= stream_rows and s["counts"]["recorded"] < 400


# -- SIGTERM: bounded stop, children and servers stopped -----------------------------------

def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.e2e
def test_sigterm_stops_the_run_and_its_children_within_seconds(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "5", "--fault-rate", "0.3", "--fault-kind", "stall",
                    "--fault-stall-s", "60")  # streams that would hold a slow stop for a minute
    proc = _start_run(srv.base_url, tmp_path, "t")
    _wait_for(lambda: (tmp_path / "t" / "requests.arrows").exists(), proc)
    time.sleep(2.0)
    kids = _descendants(proc.pid)
    assert kids, "expected the telemetry child process"
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    took = time.monotonic() - t
    assert proc.returncode == 143 and took < 10, took
    _, alive = psutil.wait_procs(kids, timeout=5)
    assert not alive
    m = orjson.loads((tmp_path / "t" / "manifest.json").read_bytes())
    assert m["status"] == "partial" and (tmp_path / "t" / "requests.parquet").exists()


@pytest.mark.e2e
def test_sigterm_stops_the_demo_and_its_server(tmp_path):
    proc = subprocess.Popen([*LOADGEN, "demo", "--rates", "4,8", "--num-prompts", "200",
                             "--result-dir", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    _wait_for(lambda: any(tmp_path.glob("demo-*/rate-4/requests.arrows")), proc, timeout=90)
    servers = [p for p in _descendants(proc.pid) if "servers.sim" in " ".join(p.cmdline())]
    assert servers
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and time.monotonic() - t < 15, err
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive  # the reference server went with it
    assert not any(tmp_path.glob("demo-*/rate-8"))  # and the next rate never started


def test_recover_false_reads_a_killed_run_in_memory_and_writes_nothing(tmp_path):
    (tmp_path / "manifest.json").write_bytes(orjson.dumps({"status": "running"}))
    w = StreamTableWriter(tmp_path / "requests.parquet", SCHEMA)
    row = dict(zip(SCHEMA.names, Record(request_id=0, status="ok").row(), strict=True))
    w.append(pa.Table.from_pylist([row], schema=SCHEMA))
    w._file.close()  # died
    run = load_run(tmp_path, recover=False)
    assert run.requests.num_rows == 1 and run.manifest["interrupted_by"] == "killed"
    assert not (tmp_path / "requests.parquet").exists()
    assert orjson.loads((tmp_path / "manifest.json").read_bytes())["status"] == "running"


def test_a_workers_run_whose_parent_died_is_merged_from_the_workers_files(tmp_path):
    from loadgen.merge import TS_SCHEMA, timeseries_table

    (tmp_path / "manifest.json").write_bytes(orjson.dumps({"status": "running"}))
    wdir = tmp_path / "workers"
    wdir.mkdir()
    # worker 0 closed its files (it stopped with the parent); worker 1 was killed: streams only
    w0 = RecordWriter(wdir / "w0.parquet")
    for i in (0, 2, 4):
        w0.add(Record(request_id=i, worker=0, status="ok"))
    w0.close()
    ts0 = StreamTableWriter(wdir / "w0.ts.parquet", TS_SCHEMA)
    ts0.append(timeseries_table([(1.0, 3, 3, 3, 1, 0, 2, 0.1, 0.2), (2.0, 5, 5, 5, 3, 0, 2, 0.2, 0.2)]))
    ts0.close()
    s1 = StreamTableWriter(wdir / "w1.parquet", SCHEMA)
    row = dict(zip(SCHEMA.names, Record(request_id=1, worker=1, status="ok").row(), strict=True))
    s1.append(pa.Table.from_pylist([row, {**row, "request_id": 3}], schema=SCHEMA))
    s1._file.close()  # died: no end marker, lock gone
    ts1 = StreamTableWriter(wdir / "w1.ts.parquet", TS_SCHEMA)
    ts1.append(timeseries_table([(1.01, 2, 2, 2, 0, 0, 2, 0.3, 0.1)]))
    ts1._file.close()
    run = load_run(tmp_path)
    assert run.requests.column("request_id").to_pylist() == [0, 1, 2, 3, 4]
    assert run.manifest["status"] == "partial" and run.manifest["interrupted_by"] == "killed"
    note = run.manifest["recovery"]["workers"]
    assert note["rows_by_worker"] == {"0": 3, "1": 2}
    assert note["salvaged_streams"] == {"w1.parquet": 2}
    # row k sums the workers' k-th samples; worker 1 keeps its last cumulative counts
    assert run.timeseries.column("sent").to_pylist() == [5.0, 7.0]
    assert run.timeseries.column("in_flight").to_pylist() == [4.0, 2.0]
    assert not wdir.exists()  # merged into requests.parquet and timeseries.parquet
    again = load_run(tmp_path)
    assert again.requests.num_rows == 5 and again.timeseries.num_rows == 2
    assert orjson.loads((tmp_path / "manifest.json").read_bytes())["interrupted_by"] == "killed"
