"""Keeping a profiled server's trace files in a run directory, named in its manifest.

A run against a server started with ``loadgen serve RUNTIME --profile perf|nsys --info-json
FILE`` and run with ``loadgen run --server-info FILE`` has the server's launch info in its
manifest under ``server_launch``, with ``server_launch.profile`` naming the profile directory.
The profiler writes its files when the *server* stops (loadgen/telemetry/profiling.py), which
is normally after the run; so:

1. at the end of ``loadgen run`` the profile is attached at once if the server has already
   stopped, else the manifest says ``complete: false`` and how to attach it later;
2. ``loadgen profile attach RUN_DIR`` (after stopping the server) hard-links the files into
   ``RUN_DIR/profile/`` (a copy where the file system cannot link) and records them in the
   manifest: ``server_launch.profile.files`` (paths relative to RUN_DIR), ``complete``, and
   ``attached`` (per file: bytes, link or copy, source; what the trace covers).

The trace covers the server's whole life, from its start to its stop, not only the run: the
manifest records both times (``covers``) beside the run's ``clock.t0_unix``.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from loadgen.manifest import update_json_locked
from loadgen.telemetry.profiling import read_done

PROFILE_DIR = "profile"  # inside the run directory


class ProfileNotReady(RuntimeError):
    """The profiled server has not stopped yet: its files are not complete."""


class NoProfile(ValueError):
    """The run directory names no profile (or its files are gone)."""


def attach_hint(run_dir: str | Path) -> str:
    return (f"the profile is written when the server stops: stop `loadgen serve` (Ctrl-C or "
            f"SIGTERM), then run `loadgen profile attach {run_dir}`")


def _profile_of(manifest: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    prof = (manifest.get("server_launch") or {}).get("profile")
    if not isinstance(prof, dict) or "dir" not in prof:
        raise NoProfile(f"{run_dir}: the manifest names no server profile (no "
                        "server_launch.profile): start the server with `loadgen serve RUNTIME "
                        "--profile perf --info-json FILE` and run with `loadgen run "
                        "--server-info FILE`")
    return prof


def attach_profile(run_dir: str | Path) -> dict[str, Any]:
    """Hard-link (or copy) the stopped server's profile into ``RUN_DIR/profile/`` and name it
    in the manifest; returns the manifest's new ``server_launch.profile``.

    Raises ProfileNotReady while the server runs, NoProfile when the run names no profile or
    the files are gone, ValueError when the profile directory holds another server start's
    files (the directory was reused)."""
    run_dir = Path(run_dir)
    mpath = run_dir / "manifest.json"
    if not mpath.is_file():
        raise NoProfile(f"{run_dir} is not a run directory (no manifest.json)")
    prof = _profile_of(orjson.loads(mpath.read_bytes()), run_dir)
    src = Path(prof["dir"])
    done = read_done(src)
    if done is None:
        raise ProfileNotReady(f"{run_dir}: the {prof.get('tool')} profile in {src} is not "
                              f"complete yet: {attach_hint(run_dir)}")
    if prof.get("started_unix") is not None and done["started_unix"] != prof["started_unix"]:
        raise ValueError(f"{src} holds the profile of another server start (started at unix "
                         f"{done['started_unix']}, not {prof['started_unix']} as this run's "
                         "server): the directory was reused; give each `loadgen serve` its own "
                         "--profile-dir")
    dest = run_dir / PROFILE_DIR
    dest.mkdir(exist_ok=True)
    attached = []
    for f in done["files"]:
        s, d = src / f["name"], dest / f["name"]
        if not s.is_file():
            raise NoProfile(f"{s} is gone (it was listed in {src / 'profile.json'})")
        d.unlink(missing_ok=True)
        try:
            os.link(s, d)
            how = "hard link"
        except OSError:  # another file system, or one without links
            shutil.copy2(s, d)
            how = "copy"
        size = d.stat().st_size
        if size != f["bytes"]:
            raise ValueError(f"{s} is {size} bytes, {f['bytes']} when the server stopped: it "
                             "changed since; was the directory reused?")
        attached.append({"path": f"{PROFILE_DIR}/{f['name']}", "bytes": size, "how": how,
                         "source": str(s)})
    new = {**prof, "files": [a["path"] for a in attached], "complete": done["complete"],
           "reason": done["reason"],
           "attached": {"utc": datetime.now(UTC).isoformat(), "files": attached,
                        "server_exit_code": done["server_exit_code"], "log": done["log"]},
           "covers": {"server_started_unix": done["started_unix"],
                      "server_stopped_unix": done["stopped_unix"],
                      "note": "the trace covers the server from its start to its stop, not "
                              "only this run (which began at clock.t0_unix)"}}
    new.pop("pending", None)

    def update(m: dict[str, Any]) -> dict[str, Any]:
        m["server_launch"]["profile"] = new
        return m

    update_json_locked(mpath, update)
    return new
