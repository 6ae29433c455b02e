"""Per-token ITL and token-aware smoothness when one chunk carries several tokens, and the
TTFT decomposition, on synthetic records whose truth is known."""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from analysis.load import Run
from analysis.run_analysis import analyze
from analysis.smoothness import smoothness
from analysis.summary import summarize
from analysis.tokens import apportion, chunk_counts, per_token_itl
from analysis.ttft_parts import decompose, summarize_components, ttft_components
from loadgen.records import Record, rows_to_table

STEP = 0.005  # the server makes one token every 5 ms


def _run(tmp_path, recs: list[Record]) -> Run:
    table = rows_to_table([r.row() for r in recs])
    manifest = {"status": "complete", "config": {"client": {"stream": True}}}
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    pq.write_table(table, tmp_path / "requests.parquet")
    return Run(path=tmp_path, manifest=manifest, requests=table, timeseries=None)


def _two_per_chunk(i: int, out: int, report_counts: bool) -> Record:
    """Tokens every STEP; the server sends the first at once, then two per chunk."""
    t0, ft = 0.1 * i, 0.1 * i + 0.02
    counts = [1] + [2] * ((out - 1) // 2) + ([1] if (out - 1) % 2 else [])
    token_t = ft + STEP * np.arange(out)
    chunk_t = token_t[np.cumsum(counts) - 1].tolist()  # a chunk leaves with its last token
    return Record(i, t_intended=t0, t_sent=t0, t_first_byte=ft, t_first_token=ft,
                  t_done=chunk_t[-1], status="ok", input_tokens=10, output_tokens=out,
                  output_tokens_source="usage", n_chunks=len(counts), chunk_times=chunk_t,
                  chunk_tokens=counts if report_counts else None,
                  max_itl=float(np.diff(chunk_t).max()))


def test_apportion_gives_one_token_first_and_spreads_the_rest_evenly():
    assert apportion(4, 7).tolist() == [1, 2, 2, 2]
    assert apportion(3, 4).tolist() == [1, 1, 2]
    assert apportion(5, 7).tolist() == [1, 1, 2, 1, 2]
    assert apportion(1, 5).tolist() == [5]
    for n, out in ((7, 30), (10, 11), (2, 2)):
        assert apportion(n, out).sum() == out


def test_chunk_counts_prefer_the_servers_count_then_estimate():
    k, basis = chunk_counts(3, 9, np.array([1, 3, 5]))
    assert (k.tolist(), basis) == ([1, 3, 5], "server")
    assert chunk_counts(3, 5, None)[1] == "estimated"
    assert chunk_counts(3, 3, None) == (pytest.approx(np.ones(3)), "one_per_chunk")
    assert chunk_counts(3, 2, np.array([1, 1]))[1] == "one_per_chunk"  # a count that does not fit


def test_per_token_itl_splits_each_gap_over_its_tokens_and_sums_to_the_decode_time():
    c = np.array([0.0, 0.010, 0.030])
    v = per_token_itl(c, np.array([1, 2, 4]))
    assert v.tolist() == pytest.approx([0.005, 0.005, 0.005, 0.005, 0.005, 0.005])
    assert v.sum() == pytest.approx(c[-1] - c[0])


@pytest.mark.parametrize("report_counts", [True, False])
def test_summary_reports_per_token_itl_apart_from_per_chunk(tmp_path, report_counts):
    run = _run(tmp_path, [_two_per_chunk(i, 21, report_counts) for i in range(30)])
    s = summarize(run)
    lat = s["latency_ms"]["from_sent"]
    assert lat["itl"]["p50"] == pytest.approx(10.0, rel=2e-3)  # chunk gaps: two tokens
    assert lat["itl_per_token"]["p50"] == pytest.approx(5.0, rel=2e-3)
    assert lat["itl_per_token"]["count"] == 30 * 20  # every token after the first
    assert lat["tpot"]["mean"] == pytest.approx(lat["itl_per_token"]["mean"], rel=1e-6)
    pc = s["tokens"]["per_chunk"]
    if report_counts:
        assert pc["server"] == 30 and pc["estimated"] == 0 and pc["note"] is None
    else:  # 21 tokens in 11 chunks: apportioned as 1 + 10 x 2, the truth here
        assert pc["estimated"] == 30 and pc["estimated_share"] == 1.0
        assert "ESTIMATED" in pc["note"]
    a = analyze(run, window="all", n_boot=10)
    assert a["percentiles_ci"]["itl"]["p50"]["value_ms"] == pytest.approx(10.0, abs=1e-6)
    assert a["percentiles_ci"]["itl_per_token"]["p50"]["value_ms"] == pytest.approx(5.0, abs=1e-6)
    assert a["tokens_per_chunk"]["server" if report_counts else "estimated"] == 30
    (cell,) = a["length_buckets"]["cells"]  # every request has the same lengths
    assert cell["itl_p50_ms"] == pytest.approx(10.0, abs=1e-6)
    assert cell["itl_token_p50_ms"] == pytest.approx(5.0, abs=1e-6)


def test_one_token_per_chunk_leaves_per_token_equal_to_per_chunk(tmp_path):
    recs = []
    for i in range(10):
        c = (0.1 * i + 0.02 + STEP * np.arange(8)).tolist()
        recs.append(Record(i, t_intended=0.1 * i, t_sent=0.1 * i, t_first_token=c[0],
                           t_done=c[-1], status="ok", output_tokens=8, n_chunks=8,
                           chunk_times=c))
    s = summarize(_run(tmp_path, recs))
    lat = s["latency_ms"]["from_sent"]
    assert lat["itl_per_token"] == lat["itl"]
    assert s["tokens"]["per_chunk"]["one_per_chunk"] == 10


def test_smoothness_counts_tokens_so_two_token_chunks_at_twice_the_cadence_are_fluid():
    d = 0.010
    # tokens due every 10 ms; the server sends 2 at a time every 18 ms (ahead of cadence)
    chunks = [np.concatenate([[0.0], 0.018 * np.arange(1, 21)])]
    counts = [np.array([1] + [2] * 20)]
    by_token = smoothness(chunks, d, counts)
    by_chunk = smoothness(chunks, d)
    assert by_token["stall_ratio"] == 0.0
    assert by_chunk["stall_ratio"] == pytest.approx(0.008 / 0.018)
    assert by_token["fluidity_index"] > 0.95  # only the first pair comes after its deadline
    assert by_chunk["fluidity_index"] < 0.1  # every chunk misses its one-token deadline


def test_ttft_decomposition_adds_up_and_flags_an_unreported_queue(tmp_path):
    recs = []
    for i in range(20):
        lag, q, p, net = 0.001, 0.002 * i, 0.030, 0.0015
        ti = 0.1 * i
        recs.append(Record(i, t_intended=ti, t_sent=ti + lag, t_first_token=ti + lag + q + p + net,
                           t_done=ti + 0.2, status="ok", output_tokens=5, n_chunks=5,
                           server_queue_s=q if i < 15 else float("nan"), server_prefill_s=p))
    recs.append(Record(99, t_intended=5.0, status="timeout"))
    run = _run(tmp_path, recs)
    c = ttft_components(run.requests)
    assert c.num_rows == 20
    parts = sum(np.nan_to_num(c.column(k).to_numpy()) for k in
                ("generator_lag", "server_queue", "server_prefill", "transport_other"))
    assert parts == pytest.approx(c.column("ttft_intended").to_numpy(), abs=1e-12)
    tr = c.column("transport_other").to_numpy()
    assert tr[:15] == pytest.approx(0.0015, abs=1e-9)  # the true network time
    assert tr[15:] == pytest.approx(0.0015 + 0.002 * np.arange(15, 20), abs=1e-9)
    s = summarize_components(run.requests)
    assert s["available"] and s["n_requests"] == 20 and s["queue_reported"] == 15
    assert "no queue time for 5 of 20" in s["note"]
    shares = [v["share_of_mean_ttft"] for v in s["components_ms"].values()]
    assert sum(shares) == pytest.approx(1.0)
    assert s["components_ms"]["server_prefill"]["p50"] == pytest.approx(30.0)
    assert summarize(run)["ttft_decomposition"]["n_requests"] == 20


def test_no_decomposition_without_server_timings_or_for_non_streamed(tmp_path):
    run = _run(tmp_path, [Record(0, t_intended=0, t_sent=0, t_first_token=0.1, t_done=0.2,
                                 status="ok", output_tokens=2, n_chunks=2)])
    s = summarize_components(run.requests)
    assert s["available"] is False and "reported no per-request timings" in s["reason"]
    assert summarize_components(run.requests, streamed=False)["available"] is False
    d = decompose([0.0], [0.002], [0.100], [np.nan], [0.030])
    assert d["transport_other"][0] == pytest.approx(0.068)
