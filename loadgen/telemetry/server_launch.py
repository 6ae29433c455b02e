"""``loadgen run --server-info FILE``: the launched server's description in the run manifest.

``loadgen serve RUNTIME ... --info-json FILE`` writes what ``servers.launch.RunningServer.
info()`` says about the server it started: runtime, version, full argv, environment overrides,
settings, base URL, model, pid, log and, when profiled, ``profile``. ``loadgen run
--server-info FILE`` puts that under the manifest's ``server_launch`` (the key the experiment
matrix writes too), uses its base URL unless ``--base-url``, ``--host`` or ``--port`` is given,
and at the end attaches the server's profile if the server has stopped by then
(loadgen/telemetry/profile_attach.py); otherwise it says how to attach it later.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from loadgen.flags import UsageError

REQUIRED = ("runtime", "argv", "base_url")


def add_server_info_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server-info", default=None, metavar="FILE",
                   help="the JSON that `loadgen serve RUNTIME --info-json FILE` wrote: recorded "
                   "in the manifest as server_launch (runtime, version, argv, flags, profile); "
                   "its base URL is used unless --base-url/--host/--port is given; a profiled "
                   "server's trace files go into RUN_DIR/profile/ (docs/telemetry.md)")


def load_server_info(path: str | Path) -> dict[str, Any]:
    """The server info in ``path``; UsageError naming the file when it is not one."""
    try:
        info = json.loads(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"--server-info {str(path)!r}: cannot read it: {e}") from None
    except ValueError as e:
        raise UsageError(f"--server-info {str(path)!r} is not JSON ({e}); give the file that "
                         "`loadgen serve RUNTIME --info-json FILE` wrote") from None
    missing = [k for k in REQUIRED if not isinstance(info, dict) or k not in info]
    if missing:
        raise UsageError(f"--server-info {str(path)!r} is not a server info file (no "
                         f"{', '.join(missing)}); give the file that `loadgen serve RUNTIME "
                         "--info-json FILE` wrote")
    return info


def manifest_section(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` as the run manifest's ``server_launch`` at the start of the run: a profile is
    not complete while its server runs, so it names no files yet."""
    from loadgen.telemetry.profile_attach import attach_hint

    out = dict(info)
    if isinstance(out.get("profile"), dict):
        out["profile"] = {**out["profile"], "files": [], "complete": False,
                          "pending": attach_hint("RUN_DIR")}
    return out


def _given(argv: list[str], flags: tuple[str, ...]) -> bool:
    return any(a == f or a.startswith(f + "=") for a in argv for f in flags)


def _norm(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def apply_server_info(ns: argparse.Namespace, argv: list[str]) -> dict[str, Any] | None:
    """``{"server_launch": ...}`` for RunSpec.extra_manifest when ``--server-info`` is given
    (and the base URL set from it unless given), else None."""
    if not getattr(ns, "server_info", None):
        return None
    info = load_server_info(ns.server_info)
    if not _given(argv, ("--base-url", "--host", "--port")):
        ns.base_url = info["base_url"]
    else:
        url = ns.base_url or f"http://{ns.host}:{ns.port}"
        if _norm(url) != _norm(info["base_url"]):
            print(f"warning: --server-info describes the server at {info['base_url']}, but "
                  f"this run sends to {url} (a proxy in front of it?)", file=sys.stderr)
    return {"server_launch": manifest_section(info)}


def after_run(run_dir: Path, extra: dict[str, Any] | None) -> None:
    """Attach the server's profile now if its server has stopped; else say how to later."""
    from loadgen.telemetry.profile_attach import (
        NoProfile,
        ProfileNotReady,
        attach_hint,
        attach_profile,
    )

    if not extra or not isinstance(extra["server_launch"].get("profile"), dict):
        return
    try:
        prof = attach_profile(run_dir)
    except ProfileNotReady:
        print(f"note: {attach_hint(run_dir)}", file=sys.stderr)
        return
    except (NoProfile, ValueError, OSError) as e:
        print(f"warning: the server's profile was not attached: {e}", file=sys.stderr)
        return
    print(f"profile: {', '.join(prof['files'])} in {run_dir} "
          f"({'complete' if prof['complete'] else 'INCOMPLETE: ' + str(prof['reason'])})",
          file=sys.stderr)
