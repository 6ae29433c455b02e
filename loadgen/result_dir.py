"""Before t0: can the run directory be written, and is there room for the records?

A benchmark that runs for an hour and then cannot save its records has wasted the hour, so
``check_result_dir`` fails before the run (and before the preflight) when the result folder
cannot be created or written, or when its file system has less free space than the records
are expected to take. The estimate is deliberately generous (an upper bound):

    stream  = n * ROW_BYTES + C * CHUNK_BYTES        (C = expected streamed chunks, i.e. the
                                                     output tokens asked for, 0 with
                                                     --no-chunk-times)
    needed  = stream * (1 + PARQUET_FRACTION) + SLACK_BYTES

(the in-run Arrow stream and, at the end, the Parquet file it is converted to, both on disk
for a moment; the manifest, summary and time series fit in the slack). A disk that fills up
*during* the run is handled by the writer (loadgen/records.py): the run stops and the files
already written stay readable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ROW_BYTES = 400  # fixed columns of one record, uncompressed, generous
CHUNK_BYTES = 12  # one chunk time (float64) and one chunk token count (int32)
PARQUET_FRACTION = 1.0  # the Parquet file is at most as large as the stream (zstd: smaller)
SLACK_BYTES = 32 << 20


class ResultDirError(RuntimeError):
    """The result folder cannot hold the run; the message says why and what to do."""


def records_bytes(n_requests: int, output_tokens_total: int, keep_chunk_times: bool) -> int:
    """Upper estimate of the bytes a run's records take on disk at their peak."""
    stream = n_requests * ROW_BYTES + (output_tokens_total * CHUNK_BYTES if keep_chunk_times else 0)
    return int(stream * (1 + PARQUET_FRACTION)) + SLACK_BYTES


def check_result_dir(parent: Path, run_name: str | None, needed_bytes: int) -> None:
    """Raise ``ResultDirError`` (or ``FileExistsError`` for a taken run name) if the run
    directory ``parent/run_name`` cannot be written or its disk is too full."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ResultDirError(f"--result-dir {parent}: cannot create it ({e.strerror or e}); "
                             "choose a folder you can write") from None
    if not parent.is_dir():
        raise ResultDirError(f"--result-dir {parent}: not a folder")
    if run_name and (parent / run_name).exists():
        raise FileExistsError(17, "run directory exists", str(parent / run_name))
    try:
        fd, probe = tempfile.mkstemp(prefix=".loadgen-probe-", dir=parent)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise ResultDirError(f"--result-dir {parent}: cannot write there ({e.strerror or e}); "
                             "choose a folder you can write") from None
    free = shutil.disk_usage(parent).free
    if free < needed_bytes:
        raise ResultDirError(
            f"--result-dir {parent}: {free / 2**20:.1f} MiB free, but this run's records may "
            f"need up to {needed_bytes / 2**20:.1f} MiB; free some space, choose another "
            "--result-dir, or make the records smaller (--no-chunk-times, fewer --num-prompts)")
