"""The results catalog over a real (small) matrix run on the reference server: a query across
cells, the rebuild from the run directories, the `loadgen results` commands, and the matrix
report. The matrix: sim x batch {1, 4} x one synthetic workload x rates {4, 8}, 8 requests per
rate (about 10 s in all)."""

from __future__ import annotations

import csv
import sqlite3

import orjson
import pyarrow.parquet as pq
import pytest

from analysis import catalog
from loadgen.cli import main
from loadgen.matrix.cells import expand
from loadgen.matrix.runner import MatrixRunner
from loadgen.matrix.spec import parse_text
from loadgen.matrix.store import Store

pytestmark = pytest.mark.e2e

SIM_MATRIX = """\
[experiment]
name = "catalog-test"

[axes]
runtimes = ["sim"]
models = ["m"]
batch_sizes = [1, 4]
workloads = ["syn"]

[load]
rates = [4, 8]
num_prompts = 8
stop_when_saturated = false

[slo]
ttft_p99_ms = 300

[models.m]

[workloads.syn]
input_len = 16
random_output_len = 8
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    root = tmp_path_factory.mktemp("store")
    exp = parse_text(SIM_MATRIX, str(root / "exp.toml"))
    x = expand(exp)
    out = MatrixRunner(exp, x, Store(root), log=lambda m: None).run()
    assert out.counts() == {"complete": 2}, out.statuses
    return Store(root)


def test_one_query_answers_p99_ttft_at_a_rate_for_every_batch_size(store):
    cols, rows = catalog.query(store.root, "SELECT runtime, batch_size, ttft_p99_ms, run_dir "
                               "FROM latest WHERE rate = 8 AND workload = 'syn' "
                               "ORDER BY batch_size")
    assert [(r[0], r[1]) for r in rows] == [("sim", 1), ("sim", 4)]
    for r in rows:  # the numbers are the run directories' own summaries
        s = orjson.loads((store.root / r[3] / "summary.json").read_bytes())
        assert r[2] == pytest.approx(s["latency_ms"]["from_intended"]["ttft"]["p99"])
        assert (store.root / r[3]).parent.parent.name == r[3].split("/")[1]  # cells/<id>/...


def test_the_cells_table_holds_each_cells_status_and_knee(store):
    _, rows = catalog.query(store.root, "SELECT status, knee_rate, rates FROM cells "
                            "ORDER BY batch_size")
    assert [r[0] for r in rows] == ["complete", "complete"]
    for _, knee, rates in rows:
        assert knee is None or knee in orjson.loads(rates)


def test_the_catalog_is_rebuilt_identically_from_the_run_directories(store, tmp_path):
    sql = ("SELECT run_dir, cell_id, attempt, current, rate, verdict, ttft_p99_ms, e2e_p99_ms, "
           "batch_size FROM runs ORDER BY run_dir")
    before = catalog.query(store.root, sql)[1]
    copy = tmp_path / "rebuilt.sqlite"
    n = catalog.rebuild(store.root, copy)
    con = sqlite3.connect(copy)
    after = con.execute(sql).fetchall()
    con.close()
    assert n == {"runs": 4, "cells": 2} and after == before and len(before) == 4


def test_results_query_prints_json_rows(store, capsys):
    code = main(["results", "query", "--store", str(store.root), "--json",
                 "SELECT batch_size, rate, verdict FROM latest ORDER BY batch_size, rate"])
    rows = orjson.loads(capsys.readouterr().out)
    assert code == 0 and [(r["batch_size"], r["rate"]) for r in rows] == [
        (1, 4.0), (1, 8.0), (4, 4.0), (4, 8.0)]


def test_results_export_writes_csv_and_parquet(store, tmp_path, capsys):
    assert main(["results", "export", "--store", str(store.root), "-o", str(tmp_path / "r.csv")]) == 0
    assert main(["results", "export", "--store", str(store.root), "-o",
                 str(tmp_path / "r.parquet")]) == 0
    with open(tmp_path / "r.csv") as f:
        rows = list(csv.DictReader(f))
    table = pq.read_table(tmp_path / "r.parquet")
    assert len(rows) == table.num_rows == 4
    assert "manifest" not in table.column_names and "ttft_p99_ms" in table.column_names


def test_results_list_filters_and_reports_a_bad_query(store, capsys):
    assert main(["results", "list", "--store", str(store.root), "--where", "batch_size = 4"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("(2 rows)")
    assert main(["results", "list", "--store", str(store.root), "--where", "nonsense = ="]) == 1
    assert "SQL error" in capsys.readouterr().err


def test_the_matrix_report_is_one_self_contained_file_with_the_knee_of_every_cell(store):
    from analysis.matrix_report import write_matrix_report

    exp = parse_text(SIM_MATRIX, str(store.root / "exp.toml"))
    path = write_matrix_report(store, exp, expand(exp))
    html = path.read_text()
    data = orjson.loads((path.parent / "report.json").read_bytes())
    assert "Capacity at the SLO" in html and "Heat map" in html and "Latency vs load" in html
    assert html.count('src="data:image/png;base64,') == len(data["images"]) >= 3
    assert "http://" not in html.split("<details><summary>experiment file")[0].replace(
        'src="data:', "")  # nothing fetched from elsewhere
    assert [c["status"] for c in data["cells"]] == ["complete", "complete"]
    for c in data["cells"]:
        assert len(c["points"]) == 2 and c["fit"]["n"] == 8
        assert c["knee"]["rate"] in (None, 4.0, 8.0)
    assert data["heatmaps"][0]["x"] == [1, 4] and data["heatmaps"][0]["y"] == ["sim"]


def test_a_store_without_a_catalog_gets_one_on_first_query(store, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy, ignore=shutil.ignore_patterns("catalog.sqlite*"))
    assert not (copy / "catalog.sqlite").exists()
    _, rows = catalog.query(copy, "SELECT count(*) FROM latest")
    assert rows == [(4,)] and (copy / "catalog.sqlite").exists()



def test_a_catalog_from_another_version_is_rebuilt_on_first_query(store, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(store.root, copy)
    con = sqlite3.connect(copy / "catalog.sqlite")
    with con:
        con.execute("UPDATE meta SET value = '0' WHERE key = 'version'")
        con.execute("DELETE FROM runs")
    con.close()
    _, rows = catalog.query(copy, "SELECT count(*) FROM latest")
    assert rows == [(4,)]
