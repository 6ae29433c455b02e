"""Records round-trip through Parquet, and the summary's numbers follow their definitions."""

import math

import numpy as np
import orjson
import pytest

from analysis.load import load_run
from analysis.metrics import derive
from analysis.summary import summarize
from loadgen.records import SCHEMA, Record, RecordWriter, rows_to_table


def _ok(i, t_int, lag, ttft, itl, n, input_tokens=10):
    t_sent = t_int + lag
    times = [t_sent + ttft + k * itl for k in range(n)]
    return Record(request_id=i, t_intended=t_int, t_sent=t_sent, t_first_byte=t_sent + ttft / 2,
                  t_first_token=times[0], t_done=times[-1], status="ok", http_status=200,
                  input_tokens=input_tokens, input_tokens_source="usage", output_tokens=n,
                  output_tokens_source="usage", n_chunks=n, chunk_times=times,
                  expected_input_tokens=input_tokens, expected_output_tokens=n)


def _write_run(tmp_path, recs, manifest):
    w = RecordWriter(tmp_path / "requests.parquet", flush_rows=3)
    for r in recs:
        w.add(r)
    w.close()
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    return load_run(tmp_path)


MANIFEST = {"status": "complete", "config": {"max_send_lag_ms": 5.0},
            "workload": {"num_requests": 4, "request_rate": 2.0, "burstiness": 1.0},
            "generator": {"cpu_s": 0.5, "wall_s": 2.0}}


def test_records_round_trip_with_schema_version(tmp_path):
    recs = [_ok(i, i * 0.5, 0.001, 0.1, 0.01, 5) for i in range(7)]
    run = _write_run(tmp_path, recs, MANIFEST)
    assert run.requests.num_rows == 7
    assert run.requests.schema.metadata[b"llm_loadgen_schema_version"] == b"1.1"
    assert run.requests.column("chunk_times")[3].as_py() == recs[3].chunk_times


def test_derived_metrics_follow_their_definitions(tmp_path):
    recs = [_ok(i, i * 0.5, 0.002, 0.100, 0.020, 11) for i in range(4)]
    d = derive(_write_run(tmp_path, recs, MANIFEST).requests)
    assert np.allclose(d.ttft_sent, 0.100) and np.allclose(d.ttft_intended, 0.102)
    assert np.allclose(d.e2e_sent, 0.100 + 10 * 0.020)
    assert np.allclose(d.tpot, 0.020) and np.allclose(d.send_lag, 0.002)
    assert d.itl.size == 4 * 10 and np.allclose(d.itl, 0.020)  # no interval spans two requests


def test_failed_requests_never_enter_latency(tmp_path):
    recs = [_ok(i, i * 0.5, 0.001, 0.1, 0.01, 3) for i in range(3)]
    recs.append(Record(request_id=3, t_intended=1.5, t_sent=1.501, t_first_byte=1.6, t_done=9.0,
                       status="http_error", http_status=500, error="HTTP 500: boom"))
    s = summarize(_write_run(tmp_path, recs, MANIFEST))
    assert s["completed"] == 3 and s["failed"] == 1
    assert s["errors"]["by_status"] == {"http_error": 1}
    assert s["errors"]["examples"]["http_error"] == "HTTP 500: boom"
    assert s["latency_ms"]["from_sent"]["e2e"]["max"] == pytest.approx(0.1 * 1e3 + 2 * 10, rel=1e-6)


def test_summary_has_vllm_bench_serve_keys(tmp_path):
    recs = [_ok(i, i * 0.5, 0.001, 0.050, 0.010, 21, input_tokens=30) for i in range(4)]
    s = summarize(_write_run(tmp_path, recs, MANIFEST))
    for k in ("request_throughput", "output_throughput", "total_token_throughput", "mean_ttft_ms",
              "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_itl_ms", "mean_e2el_ms",
              "p99.9_e2el_ms", "total_input_tokens", "total_output_tokens", "completed", "duration"):
        assert k in s, k
    assert s["mean_ttft_ms"] == pytest.approx(50.0, rel=1e-6)
    assert s["p99_ttft_ms"] == pytest.approx(50.0, rel=2e-3)  # HdrHistogram: 3 significant digits
    assert s["total_input_tokens"] == 120 and s["total_output_tokens"] == 84
    assert s["request_throughput"] == pytest.approx(4 / s["duration"])


def test_send_lag_above_threshold_makes_the_run_invalid(tmp_path):
    recs = [_ok(i, i * 0.5, 0.020, 0.1, 0.01, 3) for i in range(4)]
    s = summarize(_write_run(tmp_path, recs, MANIFEST))
    assert s["validity"]["verdict"] == "INVALID"
    assert "send lag p99 20.00 ms > 5 ms" in s["validity"]["reasons"][0]


def test_slot_wait_is_not_counted_as_generator_lag(tmp_path):
    recs = [_ok(i, i * 0.5, 0.020, 0.1, 0.01, 3) for i in range(4)]
    for r in recs:
        r.slot_wait = 0.0195
    m = {**MANIFEST, "config": {"max_send_lag_ms": 5.0, "max_concurrency": 1}}
    s = summarize(_write_run(tmp_path, recs, m))
    assert s["validity"]["verdict"] == "VALID"
    assert s["mode"] == "closed-loop (max_concurrency=1)"
    assert s["latency_ms"]["from_intended"]["ttft"]["mean"] == pytest.approx(120.0, rel=1e-6)


def test_interrupted_run_is_partial(tmp_path):
    recs = [_ok(i, i * 0.5, 0.001, 0.1, 0.01, 3) for i in range(2)]
    m = {**MANIFEST, "status": "partial", "interrupted_by": "SIGINT"}
    s = summarize(_write_run(tmp_path, recs, m))
    assert s["validity"]["verdict"] == "PARTIAL"
    assert s["counts"]["intended"] == 4 and s["counts"]["recorded"] == 2


def test_empty_table_has_the_schema():
    t = rows_to_table([])
    assert t.schema.equals(SCHEMA, check_metadata=False) and t.num_rows == 0


def test_nan_times_survive_parquet(tmp_path):
    r = Record(request_id=0, t_intended=0.0, status="cancelled")
    run = _write_run(tmp_path, [r], MANIFEST)
    assert math.isnan(run.requests.column("t_sent")[0].as_py())
