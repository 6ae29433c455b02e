"""docker/: the compose file resolves for every runtime with its settings as variables, and the
generator image copies every package the project ships.

No Docker engine runs on the development/CI machines, so images are neither built nor run here;
`docker-compose config` (Debian's docker-compose, installed by this test when missing and we are
root) checks the compose file's syntax, profiles and variable interpolation without an engine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"


@pytest.fixture(scope="module")
def compose_cmd() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("docker-compose missing and cannot install it (need root and apt-get): "
                        "apt-get install docker-compose")
        subprocess.run("apt-get install -y -qq docker-compose || "
                       "(apt-get update -qq && apt-get install -y -qq docker-compose)",
                       shell=True, check=True, capture_output=True, timeout=600)
        exe = shutil.which("docker-compose")
    assert exe, "docker-compose did not install"
    return exe


def _config(compose_cmd: str, profile: str, **env: str) -> dict:
    full_env = {k: v for k, v in os.environ.items()
                if not k.isupper() or k in ("PATH", "HOME", "LANG")}
    full_env.update(env)
    out = subprocess.run([compose_cmd, "-f", str(COMPOSE), "--profile", profile, "config"],
                         capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_vllm_service_maps_the_settings(compose_cmd: str) -> None:
    cfg = _config(compose_cmd, "vllm", MODEL="org/m-8b", MAX_BATCH="16", TP_SIZE="2",
                  GPU_COUNT="2", PORT="9100")
    svc = cfg["services"]["vllm"]
    assert svc["image"] == "vllm/vllm-openai:v0.32.0"
    cmd = svc["command"]
    assert "--model=org/m-8b" in cmd and "--max-num-seqs=16" in cmd
    assert "--tensor-parallel-size=2" in cmd
    dev = svc["deploy"]["resources"]["reservations"]["devices"][0]
    assert str(dev["count"]) == "2" and dev["capabilities"] == ["gpu"]
    assert svc["ports"] == ["127.0.0.1:9100:8000/tcp"]
    # one runtime at a time: each server is in its own profile, the generator in all of them
    profiles = {name: s["profiles"] for name, s in cfg["services"].items()}
    assert profiles["vllm"] == ["vllm"] and profiles["llamacpp"] == ["llamacpp"]
    assert {"vllm", "llamacpp", "triton"} <= set(profiles["loadgen"])


def test_llamacpp_and_triton_services(compose_cmd: str) -> None:
    cfg = _config(compose_cmd, "llamacpp", GGUF="m.gguf", MAX_BATCH="4")
    cmd = cfg["services"]["llamacpp"]["command"]
    assert cmd[cmd.index("-np") + 1] == "4" and "/models/m.gguf" in cmd and "--metrics" in cmd
    cfg = _config(compose_cmd, "triton")
    svc = cfg["services"]["triton"]
    assert svc["image"].startswith("nvcr.io/nvidia/tritonserver:")
    for svc in cfg["services"].values():
        for p in svc.get("ports", []):
            assert str(p).startswith("127.0.0.1:"), f"{p}: servers publish on loopback only"


def test_generator_image_copies_every_package() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\w+) ", (ROOT / "docker" / "Dockerfile").read_text(), re.M))
    missing = {p.rstrip("*") for p in packages} - copied
    assert not missing, f"docker/Dockerfile does not COPY {sorted(missing)}"
