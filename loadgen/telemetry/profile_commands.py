"""``loadgen profile attach RUN_DIR...``: keep a stopped, profiled server's trace files in runs.

Exit codes: 0 every run got a complete profile, 1 otherwise (the server has not stopped, the
run names no profile, or the profile is incomplete: each said on stderr).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_attach(ns: argparse.Namespace) -> int:
    from loadgen.telemetry.profile_attach import NoProfile, ProfileNotReady, attach_profile

    rc = 0
    for run_dir in ns.run_dirs:
        try:
            prof = attach_profile(run_dir)
        except (ProfileNotReady, NoProfile, ValueError, OSError) as e:
            print(f"loadgen profile attach: {e}", file=sys.stderr)
            rc = 1
            continue
        sizes = ", ".join(f"{a['path']} ({a['bytes']:,} bytes, {a['how']})"
                          for a in prof["attached"]["files"])
        if prof["complete"]:
            print(f"{run_dir}: {prof['tool']} profile attached: {sizes}")
        else:
            print(f"{run_dir}: {prof['tool']} profile attached but INCOMPLETE "
                  f"({prof['reason']}): {sizes or 'no files'}", file=sys.stderr)
            rc = 1
    return rc


def register(sub: Any) -> None:
    p = sub.add_parser("profile", help="attach a profiled server's trace files to run "
                       "directories (loadgen serve --profile perf|nsys)",
                       description="Trace files of a server started with `loadgen serve "
                       "RUNTIME --profile perf|nsys` are written when the server stops. "
                       "`loadgen profile attach RUN_DIR` then hard-links them into "
                       "RUN_DIR/profile/ (copies where linking fails) and names them in "
                       "manifest.json under server_launch.profile (docs/telemetry.md).")
    psub = p.add_subparsers(dest="profile_command", required=True, metavar="ACTION")
    a = psub.add_parser("attach", help="after the server stopped: its profile into "
                        "RUN_DIR/profile/, named in the manifest")
    a.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories made with `loadgen run --server-info FILE`")
    a.set_defaults(handler=cmd_attach)
