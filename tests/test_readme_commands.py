"""The README's first command, verbatim, in a fresh clone with a fresh virtual environment.

(The second command, the test suite, is what .ci/run executes on a fresh clone.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```")[1]
    return [ln.strip() for ln in block.strip().splitlines() if ln.strip()]


def test_readme_starts_with_exactly_two_commands_demo_then_tests():
    cmds = readme_commands()
    assert len(cmds) == 2
    assert cmds[0].endswith("loadgen demo")
    assert "pytest" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1] in ci  # CI runs the README's test command


@pytest.mark.e2e
def test_readme_demo_command_works_in_a_fresh_clone(tmp_path):
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    p = subprocess.run(readme_commands()[0], shell=True, cwd=clone, env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    reports = list((clone / "results").glob("demo-*/report.txt"))
    assert len(reports) == 1
    report = reports[0].read_text()
    assert len(re.findall(r"\bVALID$", report, flags=re.M)) == 3
    for rate in ("4", "12", "24"):
        assert (reports[0].parent / f"rate-{rate}" / "summary.json").exists()
        assert (reports[0].parent / f"rate-{rate}" / "requests.parquet").exists()
