"""The /metrics scraper against the reference server's real endpoint, and the name mapping."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from loadgen.telemetry.scraper import SCHEMA, Scraper, common_series, parse_metrics


def test_scraping_the_sim_gives_its_gauges_and_counters(start_sim):
    srv = start_sim("--max-batch-size", "2")
    s = Scraper(srv.base_url + "/metrics", interval_s=0.05).start()
    time.sleep(0.3)
    s.stop()
    assert s.n_ok >= 3 and s.n_failed == 0
    t = s.table(t0=s.t[0])
    assert t.schema == SCHEMA
    names = set(t.column("metric").to_pylist())
    assert {"sim:num_requests_running", "sim:num_requests_waiting"} <= names
    assert "sim:request_success_total" in names  # counters keep their _total suffix
    cs = common_series(t)
    assert cs["names"] == {"queue_length": "sim:num_requests_waiting",
                           "running": "sim:num_requests_running"}
    assert len(cs["t"]) == s.n_ok and np.all(np.diff(cs["t"]) > 0)
    assert np.all(cs["queue_length"] == 0) and np.all(cs["running"] == 0)  # idle server
    assert np.all(np.isnan(cs["kv_cache_usage"]))  # the sim reports no KV use
    assert s.summary()["mean_scrape_ms"] < 500


def test_a_failing_scrape_is_counted_and_named():
    s = Scraper("http://127.0.0.1:9/metrics", timeout_s=0.5)
    assert s.scrape_once() is False
    assert s.n_failed == 1 and "127.0.0.1:9/metrics" in s.last_error


VLLM_TEXT = """\
# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="1",model_name="m"} 4.0
# HELP vllm:num_requests_running Number of requests running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 8.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
"""


def test_vllm_names_map_to_the_common_series_summed_over_labels():
    rows = parse_metrics(VLLM_TEXT)
    assert ("vllm:num_requests_waiting", '{"engine":"0","model_name":"m"}', 3.0) in rows
    n = len(rows)
    t = pa.table({"t": [1.0] * n, "scrape": [0] * n, "metric": [r[0] for r in rows],
                  "labels": [r[1] for r in rows], "value": [r[2] for r in rows]})
    cs = common_series(t)
    assert cs["queue_length"].tolist() == [7.0]
    assert cs["running"].tolist() == [8.0]
    assert cs["kv_cache_usage"].tolist() == [0.25]
    assert cs["names"]["kv_cache_usage"] == "vllm:kv_cache_usage_perc"


def test_llama_server_names_map_too():
    text = ("# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 2\n"
            "# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 5\n")
    rows = parse_metrics(text)
    n = len(rows)
    t = pa.table({"t": [0.5] * n, "scrape": [0] * n, "metric": [r[0] for r in rows],
                  "labels": [r[1] for r in rows], "value": [r[2] for r in rows]})
    cs = common_series(t)
    assert (cs["queue_length"][0], cs["running"][0]) == (5.0, 2.0)
