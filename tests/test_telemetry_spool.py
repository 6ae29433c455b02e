"""Spool files and their recovery: what a crash leaves on disk becomes the usual Parquet."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from loadgen.telemetry.recover import FIRST_SAMPLE, recover_telemetry
from loadgen.telemetry.sampler import Sampler
from loadgen.telemetry.scraper import SCHEMA, scrapes_table
from loadgen.telemetry.spool import SAMPLER_SPOOL, SCRAPER_SPOOL, Spool, read_spool


def test_a_line_cut_short_is_dropped_and_meta_lines_are_merged(tmp_path):
    sp = Spool(tmp_path / "x.jsonl")
    sp.meta(kind="sampler", pid=7)
    sp.write({"t_mono": 1.0, "a": 1.0})
    sp.meta(t0=0.5)
    sp.write({"t_mono": 2.0, "a": 2.0})
    sp.close()
    with open(tmp_path / "x.jsonl", "ab") as f:
        f.write(b'{"t_mono": 3.0, "a"')  # the process died inside this write
    rows, meta, dropped = read_spool(tmp_path / "x.jsonl")
    assert [r["a"] for r in rows] == [1.0, 2.0]
    assert meta == {"kind": "sampler", "pid": 7, "t0": 0.5} and dropped == 1


def test_recovered_samples_equal_the_table_a_finished_run_writes(tmp_path):
    s = Sampler(interval_s=0.02, gpus=False, spool=Spool(tmp_path / SAMPLER_SPOOL)).start()
    time.sleep(0.2)
    s.stop()
    s.spool.close()
    t0 = s.rows[0]["t_mono"] + 0.05
    expected = s.table(t0)
    info = recover_telemetry(tmp_path, t0)
    got = pq.read_table(tmp_path / "telemetry.parquet")
    assert got.column_names == expected.column_names and got.num_rows >= 5
    for name in got.column_names:  # NaN where a row lacks a column (first row: no CPU busy)
        np.testing.assert_array_equal(got.column(name).to_numpy(), expected.column(name).to_numpy())
    f = info["files"]["telemetry.parquet"]
    assert f["rows"] == got.num_rows and f["t_origin"] == "t0 (given)"
    assert f["writer"]["kind"] == "sampler"
    assert not (tmp_path / SAMPLER_SPOOL).exists()


def test_scrapes_recover_in_the_scrapers_long_format_and_without_t0_from_the_first(tmp_path):
    sp = Spool(tmp_path / SCRAPER_SPOOL)
    sp.write({"t_mono": 10.0, "scrape": 0, "samples": [["q", "{}", 1.0], ["r", '{"a":"b"}', 2.0]]})
    sp.write({"t_mono": 10.5, "scrape": 1, "samples": [["q", "{}", 3.0]]})
    sp.close()
    (tmp_path / "manifest.json").write_bytes(orjson.dumps({"status": "running"}))
    info = recover_telemetry(tmp_path)
    t = pq.read_table(tmp_path / "server_metrics.parquet")
    assert t.schema.equals(SCHEMA)
    assert t.column("t").to_pylist() == [0.0, 0.0, 0.5] and t.column("value").to_pylist() == [1, 2, 3]
    assert info["files"]["server_metrics.parquet"]["t_origin"] == FIRST_SAMPLE
    m = orjson.loads((tmp_path / "manifest.json").read_bytes())
    assert m["telemetry"]["recovered"]["files"]["server_metrics.parquet"]["samples"] == 2
    assert scrapes_table([], 0.0).num_rows == 0


def test_recover_command_says_when_there_is_nothing_to_recover(tmp_path, capsys):
    from loadgen.cli import main

    assert main(["telemetry", "recover", str(tmp_path)]) == 1
    assert "no telemetry spool" in capsys.readouterr().err
    sp = Spool(tmp_path / SAMPLER_SPOOL)
    sp.meta(t0=1.0)
    sp.write({"t_mono": 1.5, "host_cpu_busy": 0.25})
    sp.close()
    assert main(["telemetry", "recover", str(tmp_path)]) == 0
    assert "1 rows from 1 samples" in capsys.readouterr().out
    assert pq.read_table(tmp_path / "telemetry.parquet").column("t").to_pylist() == [0.5]


def test_a_spool_pickles_without_its_file_descriptor(tmp_path):
    import pickle

    sp = Spool(tmp_path / "x.jsonl")
    sp.write({"a": 1})
    back = pickle.loads(pickle.dumps(sp))
    assert back.lines == 1 and back.path == sp.path
    back.write({"a": 2})  # closed: ignored, never writes through a stale descriptor
    sp.close()
    assert read_spool(sp.path)[0] == [{"a": 1}]
    with pytest.raises(FileNotFoundError):
        read_spool(tmp_path / "missing.jsonl")


def test_a_session_that_only_samples_writes_parquet_and_leaves_no_spool(tmp_path):
    from loadgen.telemetry.session import TelemetryOptions, TelemetrySession

    tel = TelemetrySession(TelemetryOptions(sample_interval_s=0.05, gpus=False)).start(tmp_path)
    time.sleep(0.3)
    t0 = time.perf_counter()
    out = tel.finish(tmp_path, t0, wall_s=0.3)
    assert set(out["files"]) == {"telemetry.parquet"} and "scraper" not in out
    assert pq.read_table(tmp_path / "telemetry.parquet").num_rows >= 3
    assert not list(tmp_path.glob("*.spool.jsonl"))
