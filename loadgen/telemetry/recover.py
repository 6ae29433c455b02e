"""Telemetry of a run whose generator died: the spool files turned into the usual Parquet files.

The sampler and scraper append every sample to spool files as they take it
(loadgen.telemetry.spool). When the generator is killed (SIGKILL, OOM, a crash) its
telemetry process sees its stdin close without a "stop" and calls ``recover_telemetry`` itself;
``loadgen telemetry recover RUN_DIR`` does the same by hand (e.g. when the telemetry process
was killed too). It writes ``telemetry.parquet`` and ``server_metrics.parquet`` exactly as a
finished run has them, up to the last sample taken, removes the spools, and records what it
did under ``telemetry`` in manifest.json when the manifest has no telemetry section yet
(the generator never reached its end). requests.parquet is not touched.

Times: ``t`` = perf_counter - t0 as in a finished run when the spool holds t0 (the generator
sends it to the telemetry process at its first progress tick, about one second after t0).
If the generator died before that, ``t`` is counted from the first sample instead, and
``t_origin`` says so: the series then cannot be aligned with requests.parquet exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from loadgen.telemetry.spool import SAMPLER_SPOOL, SCRAPER_SPOOL, read_spool

FIRST_SAMPLE = ("the first sample (the run's t0 never reached the telemetry process: the "
                "generator died within its first second); not aligned with requests.parquet")


def _origin(meta: dict[str, Any], rows: list[dict[str, Any]], t0: float | None
            ) -> tuple[float, str]:
    if t0 is not None:
        return t0, "t0 (given)"
    if isinstance(meta.get("t0"), int | float):
        return float(meta["t0"]), "t0 (sent by the generator)"
    return (min(r["t_mono"] for r in rows) if rows else 0.0), FIRST_SAMPLE


def recover_telemetry(run_dir: str | Path, t0: float | None = None, *,
                      reason: str = "loadgen telemetry recover",
                      update_manifest: bool = True) -> dict[str, Any]:
    """Write the Parquet files from the spools of ``run_dir``; return what was recovered."""
    from loadgen.telemetry.sampler import rows_table
    from loadgen.telemetry.scraper import scrapes_table

    d = Path(run_dir)
    info: dict[str, Any] = {"reason": reason, "files": {}}
    for spool, out, build, what in (
        (SAMPLER_SPOOL, "telemetry.parquet", rows_table, "resource samples"),
        (SCRAPER_SPOOL, "server_metrics.parquet", scrapes_table, "server /metrics, long format"),
    ):
        path = d / spool
        if not path.exists():
            continue
        rows, meta, dropped = read_spool(path)
        origin, how = _origin(meta, rows, t0)
        table = build(rows, origin)
        tmp = d / (out + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(d / out)
        path.unlink()
        last = float(table.column("t").to_numpy().max()) if table.num_rows else None
        info["files"][out] = {"content": what, "from": spool, "rows": table.num_rows,
                              "samples": len(rows), "dropped_lines": dropped,
                              "t_origin": how, "last_t": last,
                              "writer": {k: meta.get(k) for k in ("kind", "pid", "interval_s")}}
    if not info["files"]:
        raise FileNotFoundError(f"{d}: no telemetry spool ({SAMPLER_SPOOL}, {SCRAPER_SPOOL}) to "
                                "recover; a run that finished has its Parquet files already")
    if update_manifest:
        _note_in_manifest(d, info)
    return info


def _note_in_manifest(d: Path, info: dict[str, Any]) -> None:
    from loadgen.manifest import update_json_locked
    from loadgen.telemetry.session import CLOCK

    mpath = d / "manifest.json"
    if not mpath.exists():
        return

    def note(manifest: dict[str, Any]) -> dict[str, Any] | None:
        if "telemetry" in manifest:
            return None
        manifest["telemetry"] = {"recovered": info, "clock": CLOCK,
                                 "files": {k: v["content"] for k, v in info["files"].items()}}
        return manifest

    try:  # locked: analysis.load.load_run may be marking the same manifest partial
        update_json_locked(mpath, note)
    except orjson.JSONDecodeError:
        return  # not ours to repair
