"""Per-request records: the schema of requests.parquet and a writer that streams them to disk.

The schema is a contract (docs/schema.md, versioned by ``SCHEMA_VERSION``). Times are seconds
(float64) from the run's t0 on the monotonic clock; NaN where an event did not happen
(e.g. ``t_first_token`` of a request that failed before any token).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from loadgen.stream_table import StreamTableWriter

SCHEMA_VERSION = "1.1"

STATUSES = (
    "ok",  # complete, well-formed response
    "http_error",  # server answered with a non-2xx status
    "timeout",  # the per-request timeout expired
    "connect_error",  # could not connect / send the request
    "disconnected",  # connection lost after the request was sent (reset, server died)
    "cancelled",  # cancelled by the generator (Ctrl-C/SIGTERM or run deadline)
    "invalid_response",  # 2xx but the body could not be understood (malformed SSE/JSON)
)
TOKEN_SOURCES = ("usage", "tokenizer", "dataset", "chunks", "none")

NAN = float("nan")

SCHEMA = pa.schema(
    [
        ("request_id", pa.int64()),
        ("worker", pa.int32()),
        ("t_intended", pa.float64()),
        ("t_sent", pa.float64()),
        ("slot_wait", pa.float64()),
        ("t_first_byte", pa.float64()),
        ("t_first_token", pa.float64()),
        ("t_done", pa.float64()),
        ("status", pa.string()),
        ("http_status", pa.int32()),
        ("error", pa.string()),
        ("input_tokens", pa.int64()),
        ("input_tokens_source", pa.string()),
        ("output_tokens", pa.int64()),
        ("output_tokens_source", pa.string()),
        ("n_chunks", pa.int32()),
        ("chunk_times", pa.list_(pa.float64())),
        ("max_itl", pa.float64()),
        ("response_bytes", pa.int64()),
        ("expected_input_tokens", pa.int64()),
        ("expected_output_tokens", pa.int64()),
        ("dataset", pa.string()),
        ("item_id", pa.string()),
        # 1.1: multi-turn sessions, per-chunk token counts, server-side timings, payload size,
        # the server tokenize endpoint's count (third token-count source)
        ("session_id", pa.string()),
        ("turn", pa.int32()),
        ("chunk_tokens", pa.list_(pa.int32())),
        ("server_queue_s", pa.float64()),
        ("server_prefill_s", pa.float64()),
        ("server_decode_s", pa.float64()),
        ("request_bytes", pa.int64()),
        ("input_tokens_tokenize", pa.int64()),
    ],
    metadata={b"llm_loadgen_schema_version": SCHEMA_VERSION.encode()},
)
COLUMNS = tuple(SCHEMA.names)


@dataclass(slots=True)
class Record:
    """One request's outcome. Filled in by the client as events happen."""

    request_id: int
    worker: int = 0
    t_intended: float = NAN
    t_sent: float = NAN
    slot_wait: float = 0.0
    t_first_byte: float = NAN
    t_first_token: float = NAN
    t_done: float = NAN
    status: str = "cancelled"
    http_status: int | None = None
    error: str | None = None
    input_tokens: int | None = None
    input_tokens_source: str = "none"
    output_tokens: int | None = None
    output_tokens_source: str = "none"
    n_chunks: int = 0
    chunk_times: list[float] | None = field(default=None)
    max_itl: float = NAN
    response_bytes: int = 0
    expected_input_tokens: int | None = None
    expected_output_tokens: int | None = None
    dataset: str | None = None
    item_id: str | None = None
    session_id: str | None = None
    turn: int | None = None
    chunk_tokens: list[int] | None = field(default=None)
    server_queue_s: float = NAN
    server_prefill_s: float = NAN
    server_decode_s: float = NAN
    request_bytes: int | None = None
    input_tokens_tokenize: int | None = None

    def row(self) -> tuple:
        return tuple(getattr(self, c) for c in COLUMNS)


def rows_to_table(rows: Iterable[tuple]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in COLUMNS]
    arrays = [pa.array(list(c), type=SCHEMA.field(i).type) for i, c in enumerate(cols)]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


class RecordWriter:
    """Streams records to disk during the run, off the event loop; ``requests.parquet`` at close.

    ``add`` is cheap (appends a tuple). ``flush`` hands the pending rows to a single background
    thread that converts them to one Arrow record batch and appends it to the crash-safe
    stream ``requests.arrows`` (loadgen/stream_table.py), so the event loop never waits on disk
    or on Arrow. ``close`` writes what is left and converts the stream to ``path`` (Parquet).
    A generator killed before ``close`` leaves the stream, readable up to its last flush;
    ``analysis.load.load_run`` recovers it.

    A failed write (disk full) is kept in ``error`` (the stream stays readable up to the last
    complete batch); rows that could not be written are retried at the next flush and at
    close, and those still unwritten then are counted in ``n_lost``. The run stops on the
    first write error (loadgen/run.py): load whose records cannot be kept is not sent.
    """

    def __init__(self, path: Path, flush_rows: int = 2000, keep_chunk_times: bool = True) -> None:
        self.path = Path(path)
        self.flush_rows = flush_rows
        self.keep_chunk_times = keep_chunk_times
        self._pending: list[tuple] = []
        self._stream = StreamTableWriter(self.path, SCHEMA)  # raises at once if unwritable
        self.stream_path = self._stream.stream_path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="records")
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        self._unwritten: list[tuple] = []  # rows of failed writes, retried (records thread)
        self.error: OSError | None = None
        self.n_written = 0
        self.n_lost = 0
        self.closed = False

    def add(self, rec: Record) -> None:
        if not self.keep_chunk_times:
            rec.chunk_times = None
            rec.chunk_tokens = None
        self._pending.append(rec.row())
        if len(self._pending) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self._pending or self.closed:
            return
        rows, self._pending = self._pending, []
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._pool.submit(self._write, rows))

    def _write(self, rows: list[tuple]) -> None:
        with self._lock:
            if self._unwritten:
                rows, self._unwritten = self._unwritten + rows, []
            try:
                self._stream.append(rows_to_table(rows))
            except OSError as e:
                self._unwritten = rows
                if self.error is None:
                    self.error = e
                return
            self.n_written += len(rows)

    def submit(self, fn, *args) -> Future:
        """Run ``fn(*args)`` on the records thread (other in-run files, e.g. the time series)."""
        return self._pool.submit(fn, *args)

    @property
    def failed(self) -> bool:
        """Has a write failed (the run should stop)?"""
        return self.error is not None

    def close(self) -> None:
        """Write what is left, then convert the stream to ``path``.

        Raises the ``OSError`` of a failed conversion (disk full); the stream is then kept,
        intact, and ``load_run`` converts it later.
        """
        if self.closed:
            return
        self.flush()
        self.closed = True
        self._pool.shutdown(wait=True)
        for f in self._futures:
            f.result()  # re-raise an unexpected error here rather than losing it
        if self._unwritten:
            self._write([])  # one last try (space may have been freed)
            self.n_lost = len(self._unwritten)
        self._stream.close(convert=True)
