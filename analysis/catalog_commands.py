"""``loadgen results list | query | export | rebuild`` over a store's catalog (analysis/catalog.py).

Exit codes: 0 done, 1 no store or a bad query (the SQLite error is printed), 2 bad flags.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import orjson

DEFAULT_STORE = "results/store"
EXPORT_FORMATS = ("csv", "json", "parquet")


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "results", help="query the results catalog (every run's manifest and summary)",
        description="The catalog (STORE/catalog.sqlite) indexes every run directory under a "
        "results store: tables runs, cells and the view latest (docs/experiments.md). It is "
        "rebuilt from the directories when missing.")
    rsub = r.add_subparsers(dest="results_command", required=True, metavar="SUBCOMMAND")

    def store_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", default=DEFAULT_STORE, metavar="DIR",
                       help=f"results store (default {DEFAULT_STORE})")

    ls = rsub.add_parser("list", help="runs of the latest attempt of each cell, one per line")
    store_arg(ls)
    ls.add_argument("--where", default=None, metavar="SQL",
                    help="SQL condition, e.g. \"runtime = 'llamacpp' AND rate >= 4\"")
    ls.add_argument("--columns", default=None, metavar="A,B,...",
                    help="columns to show (default: the main axes and latencies)")
    ls.add_argument("--all", action="store_true",
                    help="every run: earlier attempts, partial runs and saturation probes too")
    ls.add_argument("--cells", action="store_true", help="list cells (status, cause, knee) "
                    "instead of runs")
    ls.add_argument("--json", action="store_true", help="print JSON rows")
    ls.set_defaults(handler=cmd_list)

    q = rsub.add_parser("query", help="run one SQL query (read-only) on the catalog",
                        description="Tables runs and cells, view latest. Example: SELECT "
                        "runtime, ttft_p99_ms FROM latest WHERE rate = 8 AND dataset = "
                        "'sharegpt' AND batch_size = 32")
    q.add_argument("sql", metavar="SQL")
    store_arg(q)
    fmt = q.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON rows")
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    q.set_defaults(handler=cmd_query)

    e = rsub.add_parser("export", help="write a query's rows to CSV, JSON or Parquet")
    store_arg(e)
    e.add_argument("--output", "-o", required=True, metavar="FILE")
    e.add_argument("--format", choices=EXPORT_FORMATS, default=None,
                   help="default: from the file's extension (.csv, .json, .parquet)")
    e.add_argument("--sql", default=None, help="query to export (default: every run of the "
                   "latest view, without the JSON columns)")
    e.add_argument("--with-json", action="store_true",
                   help="include the manifest and summary JSON columns in the default export")
    e.set_defaults(handler=cmd_export)

    b = rsub.add_parser("rebuild", help="recreate the catalog from the run directories")
    store_arg(b)
    b.set_defaults(handler=cmd_rebuild)


def _plain_columns() -> list[str]:
    from analysis.catalog import RUN_COLUMNS

    return [c for c, _ in RUN_COLUMNS if c not in ("manifest", "summary")]


def render_table(cols: list[str], rows: list[tuple]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.6g}"
        s = str(v)
        return s if len(s) <= 60 else s[:57] + "..."

    text = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in text]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip()
              for t in text]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def _json_rows(cols: list[str], rows: list[tuple]) -> str:
    return orjson.dumps([dict(zip(cols, r, strict=True)) for r in rows],
                        option=orjson.OPT_INDENT_2).decode()


def _run(ns: argparse.Namespace, sql: str) -> tuple[list[str], list[tuple]] | None:
    import sqlite3

    from analysis.catalog import query

    try:
        return query(ns.store, sql)
    except FileNotFoundError as e:
        print(f"loadgen results: {e}", file=sys.stderr)
    except sqlite3.Error as e:
        print(f"loadgen results: SQL error: {e}\n  in: {sql}", file=sys.stderr)
    return None


def cmd_list(ns: argparse.Namespace) -> int:
    from analysis.catalog import CELL_COLUMNS, LIST_COLUMNS

    if ns.cells:
        default = ("label", "status", "knee_rate", "knee_low", "knee_high", "max_achieved_rps",
                   "cause", "cell_id")
        table = "cells"
        known = [c for c, _ in CELL_COLUMNS]
    else:
        default = LIST_COLUMNS
        table = "runs" if ns.all else "latest"
        known = _plain_columns() + ["manifest", "summary"]
    cols = [c.strip() for c in ns.columns.split(",")] if ns.columns else list(default)
    bad = [c for c in cols if c not in known]
    if bad:
        from loadgen.flags import UsageError

        raise UsageError(f"--columns: unknown column(s) {', '.join(bad)}; columns: "
                         f"{', '.join(known)}")
    order = "label" if ns.cells else "runtime, model, batch_size, tp, workload, repetition, rate"
    sql = (f"SELECT {', '.join(cols)} FROM {table}"
           + (f" WHERE {ns.where}" if ns.where else "") + f" ORDER BY {order}")
    res = _run(ns, sql)
    if res is None:
        return 1
    print(_json_rows(*res) if ns.json else render_table(*res))
    return 0


def cmd_query(ns: argparse.Namespace) -> int:
    res = _run(ns, ns.sql)
    if res is None:
        return 1
    cols, rows = res
    if ns.json:
        print(_json_rows(cols, rows))
    elif ns.csv:
        w = csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
    else:
        print(render_table(cols, rows))
    return 0


def export_rows(cols: list[str], rows: list[tuple], path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            w.writerows(rows)
    elif fmt == "json":
        path.write_text(_json_rows(cols, rows) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}), path)


def cmd_export(ns: argparse.Namespace) -> int:
    from loadgen.flags import UsageError

    out = Path(ns.output)
    fmt = ns.format or out.suffix.lstrip(".").lower()
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format: cannot tell the format of {out.name!r}; give --format "
                         f"{' | '.join(EXPORT_FORMATS)}")
    cols = _plain_columns() + (["manifest", "summary"] if ns.with_json else [])
    sql = ns.sql or f"SELECT {', '.join(cols)} FROM latest ORDER BY run_dir"
    res = _run(ns, sql)
    if res is None:
        return 1
    export_rows(*res, out, fmt)
    print(f"wrote {len(res[1])} rows to {out}")
    return 0


def cmd_rebuild(ns: argparse.Namespace) -> int:
    from analysis.catalog import rebuild

    root = Path(ns.store)
    if not root.is_dir():
        print(f"loadgen results: {root}: no such directory", file=sys.stderr)
        return 1
    n = rebuild(root)
    print(f"catalog {root / 'catalog.sqlite'}: {n['runs']} runs, {n['cells']} cells")
    return 0
