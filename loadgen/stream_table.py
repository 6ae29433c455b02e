"""An append-only table that survives a crash: Arrow IPC streams during the run, Parquet after.

A Parquet file is readable only once its footer is written, so a generator killed mid-run
(SIGKILL, the OOM killer, a crash) would leave nothing readable. Instead, while a run goes
on, each flush appends one record batch to an Arrow IPC *stream* file (``NAME.arrows``): a
stream has no footer, each batch is self-delimiting, and a reader takes every complete batch
and stops at a torn last one. ``close`` converts the stream to the final Parquet file
(written to a temporary name and renamed, so a reader never sees half a file) and removes
the stream. ``salvage`` reads what a dead writer left; ``finalize`` finishes the conversion.

A failed append (disk full) is cut back to the last complete batch (the file is truncated
to where that batch ended), so the stream stays readable; the next append starts a new
segment file (``NAME.arrows.1``, ``.2`` ...), and readers take the segments in order.

The writer holds an exclusive ``flock`` on its segment while it is open, so a reader can tell
a live run (lock held: read a snapshot, change nothing) from a dead one (the kernel drops the
lock when the process dies, however it dies). Appending a batch is cheaper than encoding
Parquet (no compression, no page statistics); the conversion happens after the run. Batches
reach the OS (``flush``) at once, so they survive a kill of the process; ``fsync`` is not
called, so the last ones may not survive a power loss of the machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

STREAM_SUFFIX = ".arrows"
ROW_GROUP_ROWS = 65_536
"""Rows per Parquet row group at conversion (the small in-run batches are merged)."""


def stream_path_for(parquet_path: Path) -> Path:
    """``requests.parquet`` -> ``requests.arrows`` (same folder): the first segment."""
    return Path(parquet_path).with_suffix(STREAM_SUFFIX)


def segments(parquet_path: Path) -> list[Path]:
    """The stream segments of ``parquet_path`` that exist, in write order."""
    first = stream_path_for(parquet_path)
    pat = re.compile(re.escape(first.name) + r"(?:\.(\d+))?$")
    found = []
    if first.parent.is_dir():
        for p in first.parent.iterdir():
            m = pat.fullmatch(p.name)
            if m:
                found.append((int(m.group(1) or 0), p))
    return [p for _, p in sorted(found)]


class StreamTableWriter:
    """Append record batches of ``schema`` for ``parquet_path``; convert to Parquet at close.

    One thread appends (the records thread). ``append`` raises the ``OSError`` of a failed
    write (disk full) after cutting the segment back to its last complete batch.
    """

    def __init__(self, parquet_path: Path, schema: pa.Schema, compression: str = "zstd") -> None:
        self.parquet_path = Path(parquet_path)
        self.stream_path = stream_path_for(self.parquet_path)
        self.schema = schema
        self.compression = compression
        self.n_rows = 0
        self.closed = False
        self._segment = 0
        self._file = None
        self._writer = None
        self._open_segment()  # at once: a result folder we cannot write fails before t0

    def _open_segment(self) -> None:
        name = self.stream_path if self._segment == 0 else \
            self.stream_path.with_name(f"{self.stream_path.name}.{self._segment}")
        self._segment += 1
        # "x": never append to (or clobber) another run's leftover stream. Unbuffered: every
        # byte pyarrow writes is in the file (or failed) when write_batch returns, so a failed
        # append can be cut back exactly, with nothing left in a buffer to flush later.
        f = open(name, "xb", buffering=0)  # noqa: SIM115 - closed in _close_segment()
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._writer = ipc.new_stream(f, self.schema)
            f.flush()
        except BaseException:
            f.close()
            with contextlib.suppress(OSError):
                name.unlink()  # a header that did not fit: nothing in it yet
            raise
        self._file = f

    def _close_segment(self, end_marker: bool) -> None:
        f, w = self._file, self._writer
        self._file = self._writer = None
        if f is None:
            return
        try:
            if end_marker and w is not None:
                with contextlib.suppress(OSError, pa.ArrowException):
                    w.close()  # the end-of-stream marker (salvage does not need it)
                    f.flush()
        finally:
            f.close()  # releases the lock

    def append(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Append one batch and hand it to the OS (it then survives a kill of this process)."""
        if self.closed:
            raise ValueError(f"{self.stream_path}: append after close")
        if self._file is None:
            self._open_segment()
        f, w = self._file, self._writer
        good = f.tell()
        try:
            if isinstance(batch, pa.Table):
                for b in batch.to_batches():
                    w.write_batch(b)
            else:
                w.write_batch(batch)
            f.flush()
        except (OSError, pa.ArrowException) as e:
            # Cut the torn batch off, so that the segment ends on a complete one; the next
            # append starts a new segment (this writer's position is now unknown).
            with contextlib.suppress(OSError):
                os.ftruncate(f.fileno(), good)
            with contextlib.suppress(OSError):
                f.close()
            self._file = self._writer = None
            if isinstance(e, OSError):
                raise
            raise OSError(f"{self.stream_path}: write failed: {e}") from e
        self.n_rows += batch.num_rows

    def close(self, convert: bool = True) -> None:
        """End the stream; with ``convert`` write the Parquet file and remove the segments.

        If the conversion fails (disk full) the segments are kept, intact, for ``finalize``
        later, and the error is raised; no partial Parquet file is left behind.
        """
        if self.closed:
            return
        self.closed = True
        self._close_segment(end_marker=True)
        if convert:
            finalize(self.parquet_path, self.compression, schema=self.schema)


@dataclass(frozen=True)
class Salvaged:
    """What the stream segments hold: the complete batches, and how they ended."""

    table: pa.Table
    batches: int
    clean_end: bool  # every segment ended on a complete batch
    error: str | None  # why reading stopped early somewhere (a torn batch), else None


def _read_segment(path: Path) -> tuple[pa.Schema | None, list[pa.RecordBatch], str | None]:
    with pa.OSFile(str(path), "r") as src:  # read, not mapped: the table outlives the file
        try:
            reader = ipc.open_stream(src)
        except (pa.ArrowInvalid, OSError) as e:
            return None, [], f"{path.name}: no complete stream header ({e})"
        batches: list[pa.RecordBatch] = []
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                return reader.schema, batches, None
            except (pa.ArrowInvalid, OSError) as e:
                return reader.schema, batches, (f"{path.name}: stopped at a torn batch after "
                                                f"{len(batches)} complete ones ({e})")


def salvage(parquet_path: Path, schema: pa.Schema | None = None) -> Salvaged:
    """Every complete batch of the stream segments of ``parquet_path``, however they ended.

    A segment too short for its header (killed right at start) contributes nothing; a torn
    last batch is dropped and described in ``error``. ``schema`` is used when no segment
    has a readable header.
    """
    batches: list[pa.RecordBatch] = []
    errors: list[str] = []
    for seg in segments(parquet_path):
        s, b, err = _read_segment(seg)
        if s is not None and schema is None:
            schema = s
        batches += b
        if err:
            errors.append(err)
    if schema is None:
        raise ValueError(f"{stream_path_for(parquet_path)}: no readable Arrow IPC stream "
                         f"({'; '.join(errors) or 'no segment found'})")
    table = pa.Table.from_batches(batches, schema=schema)
    return Salvaged(table, len(batches), not errors, "; ".join(errors) or None)


def _header_schema(path: Path) -> pa.Schema | None:
    with pa.OSFile(str(path), "r") as src:
        try:
            return ipc.open_stream(src).schema
        except (pa.ArrowInvalid, OSError):
            return None


def finalize(parquet_path: Path, compression: str = "zstd",
             schema: pa.Schema | None = None) -> int:
    """Convert the stream segments of ``parquet_path`` to it (atomically); remove them.

    Returns the number of rows. The segments are memory mapped and read batch by batch, so
    memory holds about one row group. On an error (disk full) the temporary Parquet file is
    removed, the segments are kept, and the error is raised.
    """
    parquet_path = Path(parquet_path)
    segs = segments(parquet_path)
    tmp = parquet_path.with_name(parquet_path.name + ".tmp")
    n = 0
    try:
        if schema is None:
            schema = next((s for s in map(_header_schema, segs) if s is not None), None)
        if schema is None:
            raise ValueError(f"{stream_path_for(parquet_path)}: no readable Arrow IPC stream; "
                             "nothing to convert")
        with pq.ParquetWriter(tmp, schema, compression=compression) as w:
            for seg in segs:
                with pa.memory_map(str(seg), "r") as src:
                    try:
                        reader = ipc.open_stream(src)
                    except (pa.ArrowInvalid, OSError):
                        continue  # a header that was never completed: no rows
                    pending: list[pa.RecordBatch] = []
                    rows = 0
                    while True:
                        try:
                            b = reader.read_next_batch()
                        except (StopIteration, pa.ArrowInvalid, OSError):
                            break  # the end, or a torn last batch (dropped)
                        pending.append(b)
                        rows += b.num_rows
                        if rows >= ROW_GROUP_ROWS:
                            w.write_table(pa.Table.from_batches(pending, schema=schema))
                            n, pending, rows = n + rows, [], 0
                    if pending:  # inside the mapping's lifetime
                        w.write_table(pa.Table.from_batches(pending, schema=schema))
                        n += rows
            if n == 0:
                w.write_table(schema.empty_table())
        os.replace(tmp, parquet_path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    for s in segs:
        s.unlink()
    return n


def writer_alive(parquet_path: Path) -> bool:
    """Is a live process still writing the stream of ``parquet_path`` (holding its lock)?"""
    for seg in segments(parquet_path):
        try:
            f = open(seg, "rb")  # noqa: SIM115
        except FileNotFoundError:
            continue
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return False
