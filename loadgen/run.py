"""One benchmark run, end to end: preflight, run directory, engine, records, summary.

Run directory layout (docs/schema.md):
  manifest.json       configuration, seeds, tool version/commit, environment, server info,
                      status (running -> complete | partial | failed)
  requests.parquet    one row per request (loadgen.records.SCHEMA), streamed during the run
  timeseries.parquet  once a second: intended/started/sent/done/failed/in-flight, loop lag, CPU
  telemetry.parquet, server_metrics.parquet, requests_joined.parquet
                      with RunSpec.telemetry (docs/telemetry.md)
  summary.json        analysis.summary.summarize() of the above
  summary.txt         the table printed at the end
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import signal
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from analysis.histograms import describe_ms
from analysis.load import load_run
from analysis.summary import summarize
from analysis.table import render_summary
from arrivals.workload import Workload
from loadgen.clients.base import Client, as_client
from loadgen.clients.openai import ClientConfig
from loadgen.engine import TIMESERIES_COLUMNS, EngineOptions, run_engine
from loadgen.manifest import (
    redact_argv,
    tool_info,
    write_json_atomic,
)
from loadgen.progress import Progress
from loadgen.records import SCHEMA_VERSION, RecordWriter
from loadgen.result_dir import check_result_dir, records_bytes
from loadgen.stream_table import StreamTableWriter
from loadgen.telemetry.env import environment
from loadgen.telemetry.session import TelemetryOptions, TelemetrySession

EXIT_VALID, EXIT_ERROR, EXIT_USAGE, EXIT_INVALID = 0, 1, 2, 3
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


@dataclass(frozen=True)
class RunSpec:
    client: ClientConfig | Client  # an OpenAI ClientConfig, or any loadgen/clients Client
    workload: Workload
    engine: EngineOptions = field(default_factory=EngineOptions)
    result_dir: Path = Path("results")
    run_name: str | None = None
    max_send_lag_ms: float = 5.0
    keep_chunk_times: bool = True
    do_preflight: bool = True
    progress: bool = True
    quiet: bool = False
    argv: list[str] = field(default_factory=list)
    extra_manifest: dict[str, Any] = field(default_factory=dict)
    # None: no time series (the environment manifest is always written). The CLI sets it from
    # its telemetry flags (loadgen.telemetry.commands.options_from_argv).
    telemetry: TelemetryOptions | None = None
    # Count every distinct prompt with the server's /tokenize before t0 (records'
    # input_tokens_tokenize; loadgen/tokencount.py). Needs the OpenAI client.
    count_tokens_with_server: bool = False
    # Generator processes sharing the schedule (loadgen/workers.py); 1: this process only.
    workers: int = 1
    # A Ray cluster to run the workers on ("auto", an address, or "local"), or None
    # (loadgen/distributed/ray_runner.py).
    ray: str | None = None


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    exit_code: int
    text: str


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def default_run_name(spec: RunSpec) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    rate = spec.workload.description.get("request_rate", "plan")
    model = as_client(spec.client).label.replace("/", "_")
    return f"{stamp}-{model}-rate{rate}"


def _client_manifest(c: ClientConfig | Client) -> dict[str, Any]:
    client = as_client(c)
    return {"kind": client.kind, **client.describe()}


def new_manifest(spec: RunSpec, run_dir: Path, server: dict[str, Any]) -> dict[str, Any]:
    wl = spec.workload
    return _json_safe({
        "schema_version": SCHEMA_VERSION,
        "kind": "llm-loadgen run",
        "status": "running",
        "interrupted_by": None,
        "run_dir": str(run_dir),
        "created_utc": datetime.now(UTC).isoformat(),
        "command": redact_argv(spec.argv),
        "tool": tool_info(),
        "config": {
            "client": _client_manifest(spec.client),
            "engine": asdict(spec.engine),
            "max_concurrency": spec.engine.max_concurrency,
            "max_send_lag_ms": spec.max_send_lag_ms,
            "keep_chunk_times": spec.keep_chunk_times,
            "preflight": spec.do_preflight,
        },
        "workload": {**wl.description, "num_requests": len(wl), "dataset": wl.dataset,
                     "intended_duration_s": wl.duration},
        "seeds": {"workload": wl.description.get("seed")},
        "server": server,
        "environment": environment(),
        "clock": {"source": "time.perf_counter (CLOCK_MONOTONIC)", "t0_unix": None},
        **spec.extra_manifest,
    })


TS_SCHEMA = pa.schema([(c, pa.float64()) for c in TIMESERIES_COLUMNS])
WRITE_ERROR = "write_error"
"""``interrupted_by`` of a run stopped because its records could not be written."""


def _ts_table(rows: list[tuple]) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array([r[i] for r in rows], type=pa.float64()) for i in range(len(TIMESERIES_COLUMNS))],
        schema=TS_SCHEMA)


async def _run_async(spec: RunSpec, run_dir: Path, manifest: dict[str, Any],
                     tokenize_counts: list[int] | None = None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    bodies = as_client(spec.client).prepare(spec.workload)
    writer = RecordWriter(run_dir / "requests.parquet", keep_chunk_times=spec.keep_chunk_times)
    # The per-second time series is crash-safe too: its rows go to timeseries.arrows on the
    # records thread as they are made (loadgen/stream_table.py).
    ts_stream = StreamTableWriter(run_dir / "timeseries.parquet", TS_SCHEMA)
    ts_done = [0]
    progress = Progress(len(spec.workload), spec.workload.duration,
                        enabled=spec.progress and not spec.quiet)
    # Telemetry (optional): threads beside the loop; the writer/progress hooks are O(1).
    tel = TelemetrySession(spec.telemetry).start(run_dir) if spec.telemetry is not None else None
    engine_writer = tel.wrap_writer(writer) if tel is not None else writer
    show = tel.wrap_progress(progress) if tel is not None else progress
    interrupted: list[str] = []

    def ts_append(rows: list[tuple]) -> None:
        with contextlib.suppress(OSError):  # the records' own error stops the run
            ts_stream.append(_ts_table(rows))

    def on_progress(res: Any, now: float) -> None:
        show(res, now)
        rows = res.timeseries
        if len(rows) > ts_done[0] and not writer.closed:
            writer.submit(ts_append, rows[ts_done[0]:])
            ts_done[0] = len(rows)
        if writer.failed and not interrupted:
            interrupted.append(WRITE_ERROR)
            print(f"\nloadgen: cannot write records ({writer.error}); stopping the run, the "
                  "records written so far are kept", file=sys.stderr)
            task.cancel()

    task = loop.create_task(run_engine(spec.workload, spec.client, engine_writer, spec.engine,
                                       bodies=bodies, on_progress=on_progress,
                                       input_tokens_tokenize=tokenize_counts))

    def on_signal(name: str) -> None:
        if interrupted:
            print(f"\n{name} again: already stopping, flushing records...", file=sys.stderr)
            return
        interrupted.append(name)
        print(f"\n{name}: cancelling in-flight requests and saving the partial run...", file=sys.stderr)
        task.cancel()

    # The caller's handlers (a demo or sweep that stops its server on SIGTERM) come back after.
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        loop.add_signal_handler(sig, on_signal, sig.name)
    close_error: OSError | None = None
    try:
        res = await task
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            if handler is not None:
                signal.signal(sig, handler)
        try:
            writer.close()
        except OSError as e:  # the conversion failed (disk full): the stream is kept
            close_error = e
        progress.close()
        if tel is not None:
            tel.stop()
    try:
        if len(res.timeseries) > ts_done[0]:
            ts_stream.append(_ts_table(res.timeseries[ts_done[0]:]))
        ts_stream.close(convert=True)
    except OSError as e:
        close_error = close_error or e
    lag = describe_ms(res.loop_lag_s)
    lag.pop("hdr", None)
    error = writer.error or close_error
    if error is not None and WRITE_ERROR not in interrupted:
        interrupted.insert(0, WRITE_ERROR)
    manifest["status"] = "partial" if (res.interrupted or interrupted) else "complete"
    manifest["interrupted_by"] = interrupted[0] if interrupted else None
    if error is not None:
        manifest["failure"] = (f"records could not be written ({type(error).__name__}: {error}); "
                               f"{writer.n_lost} records lost; the files written are readable")
    manifest["clock"]["t0_unix"] = res.t0_unix
    manifest["clock"]["t0_utc"] = datetime.fromtimestamp(res.t0_unix, UTC).isoformat()
    if tel is not None:
        try:
            manifest["telemetry"] = tel.finish(run_dir, res.t0, res.wall_s)
        except (OSError, FileNotFoundError) as e:  # disk full: the records come first
            manifest["telemetry"] = {"unavailable": f"not written: {type(e).__name__}: {e}"}
    manifest["generator"] = {
        "wall_s": res.wall_s,
        "cpu_s": res.cpu_s,
        "event_loop_lag_ms": {**lag, "probe_interval_ms": 10.0},
        "requests_started": res.counters.started,
        "requests_recorded": writer.n_written,
        "requests_lost": writer.n_lost,
    }
    return manifest


def execute(spec: RunSpec) -> RunResult:
    """Run the benchmark described by ``spec`` and write its run directory."""
    import uvloop  # imported here: only the process that runs the engine needs it

    if spec.telemetry is None and spec.argv[1:2] == ["run"]:  # `loadgen run` flags
        from dataclasses import replace

        from loadgen.telemetry.commands import options_from_argv

        spec = replace(spec, telemetry=options_from_argv(spec.argv[1:], as_client(spec.client).base_url))
    # Before t0: import what the records thread would import mid-run (pyarrow pulls in pandas
    # on its first conversion) and freeze the heap so that full garbage collections of the
    # imported modules' objects do not pause the event loop during the run (measured: 40-60 ms
    # pauses without, benchmarks/README.md).
    pa.array([0.0])
    gc.collect()
    gc.freeze()
    wl = spec.workload
    check_result_dir(Path(spec.result_dir), spec.run_name,
                     records_bytes(len(wl), int(wl.output_tokens.sum()), spec.keep_chunk_times))
    server: dict[str, Any] = {}
    if spec.do_preflight:
        server = uvloop.run(as_client(spec.client).preflight())
    tok_counts, tok_info = _tokenize_counts(spec)
    run_dir = Path(spec.result_dir) / (spec.run_name or default_run_name(spec))
    run_dir.mkdir(parents=True, exist_ok=False)
    manifest = new_manifest(spec, run_dir, server)
    if tok_info is not None:
        manifest["token_counts"] = tok_info
    write_json_atomic(run_dir / "manifest.json", manifest)
    try:
        if spec.ray is not None:
            from loadgen.distributed.ray_runner import run_ray

            manifest = run_ray(spec, run_dir, manifest, spec.ray, spec.workers, tok_counts)
        elif spec.workers > 1:
            from loadgen.workers import run_local

            manifest = run_local(spec, run_dir, manifest, spec.workers, tok_counts)
        else:
            manifest = uvloop.run(_run_async(spec, run_dir, manifest, tok_counts))
    except BaseException as e:
        manifest["status"] = "failed"
        manifest["failure"] = f"{type(e).__name__}: {e}"
        with contextlib.suppress(OSError):
            write_json_atomic(run_dir / "manifest.json", manifest)
        raise
    try:
        write_json_atomic(run_dir / "manifest.json", manifest)
        return finish(run_dir)
    except OSError as e:  # disk full: what is on disk stays readable (atomic renames)
        for tmp in run_dir.glob("*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise RunWriteError(f"{run_dir}: the run ended but its files could not all be written "
                            f"({e}); the records written are kept: run `loadgen summary "
                            f"{run_dir}` once there is space, to recover and summarise them") from e


class RunWriteError(RuntimeError):
    """The run's files could not be written (disk full); the message says what is kept."""


def _tokenize_counts(spec: RunSpec) -> tuple[list[int] | None, dict[str, Any] | None]:
    """Before t0: the server's /tokenize count of every request's prompt, if asked for."""
    if not spec.count_tokens_with_server:
        return None, None
    from loadgen.clients.openai import OpenAIClient
    from loadgen.preflight import PreflightError
    from loadgen.tokencount import server_token_counts

    client = as_client(spec.client)
    if not isinstance(client, OpenAIClient):
        raise PreflightError(f"--count-tokens-with-server needs an OpenAI-compatible client, "
                             f"not {client.kind!r}")
    return server_token_counts(client.cfg, spec.workload)


def finish(run_dir: Path) -> RunResult:
    """Summarise a run directory (again): write summary.json/summary.txt, pick the exit code."""
    run = load_run(run_dir)
    s = summarize(run)
    write_json_atomic(run_dir / "summary.json", s)
    text = render_summary(s)
    (run_dir / "summary.txt").write_text(text + "\n")
    v = s["validity"]["verdict"]
    if v == "VALID":
        code = EXIT_VALID
    elif v == "PARTIAL":
        code = EXIT_SIGNAL.get(run.manifest.get("interrupted_by") or "", EXIT_ERROR)
    else:
        code = EXIT_INVALID
    return RunResult(run_dir=run_dir, summary=s, exit_code=code, text=text)


