"""The environment manifest on this machine, and `loadgen env diff`."""

from __future__ import annotations

import os
import time

import orjson
import pytest

from loadgen.cli import main
from loadgen.telemetry import envdiff
from loadgen.telemetry.env import _bracketed, _cpulist, environment

SECTIONS = ("cpu", "memory", "os", "virtualization", "python")


@pytest.fixture(scope="module")
def env() -> dict:
    return environment()


def _is_unavailable(v) -> bool:
    return isinstance(v, dict) and set(v) == {"unavailable"} and isinstance(v["unavailable"], str)


def test_every_field_has_a_source_and_a_value_or_a_reason(env):
    for sec in SECTIONS:
        fields = {k: v for k, v in env[sec].items() if k != "sources"}
        assert set(fields) == set(env[sec]["sources"]), sec
        for k, v in fields.items():
            assert v is not None, f"{sec}.{k} is None: must be a value or unavailable(reason)"
            if isinstance(v, dict) and "unavailable" in v:
                assert _is_unavailable(v) and v["unavailable"], f"{sec}.{k}"


def test_the_manifest_matches_what_the_os_says(env):
    assert env["cpu"]["threads"] == os.cpu_count()
    assert env["cpu"]["affinity"] == sorted(os.sched_getaffinity(0))
    assert isinstance(env["cpu"]["flags"], list) and len(env["cpu"]["flags"]) > 10
    assert env["memory"]["total_bytes"] > 1 << 28
    assert env["memory"]["thp_enabled"] in ("always", "madvise", "never") or _is_unavailable(
        env["memory"]["thp_enabled"])
    pools = env["memory"]["hugepage_pools"]
    assert "2MB" in pools and pools["2MB"]["nr_hugepages"] >= 0
    assert env["os"]["kernel_release"] == os.uname().release
    assert env["python"]["packages"]["psutil"] not in (None, "")
    assert env["tool"]["version"]


def test_gpus_are_listed_or_their_absence_is_explained(env):
    gpu = env["gpu"]
    if "unavailable" in gpu:
        assert "NVML" in gpu["unavailable"] or "nvidia-ml-py" in gpu["unavailable"]
    else:
        assert gpu["count"] == len(gpu["devices"]) and gpu["driver_version"]


def test_collecting_it_is_fast():
    t = time.perf_counter()
    environment()
    assert time.perf_counter() - t < 1.0


def test_sysfs_choice_and_cpu_list_parsers():
    assert _bracketed("always [madvise] never\n") == "madvise"
    assert _cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]


def test_diff_reports_exactly_the_changed_leaves(env):
    other = orjson.loads(orjson.dumps(env))
    thp = env["memory"]["thp_enabled"]
    other["memory"]["thp_enabled"] = "never" if thp != "never" else "always"
    other["python"]["packages"]["torch"] = "9.9.9"
    other["collect_s"] = 123.0  # timing is not a difference
    rows = envdiff.diff({"environment": env}, {"environment": other})
    assert [r[0] for r in rows] == ["environment.memory.thp_enabled",
                                    "environment.python.packages.torch"]


def test_env_diff_command_between_a_run_dir_and_an_env_file(tmp_path, env, capsys):
    run = tmp_path / "run"
    run.mkdir()
    other = orjson.loads(orjson.dumps(env))
    other["os"]["hostname"] = "elsewhere"
    (run / "manifest.json").write_bytes(orjson.dumps({"environment": other, "server": {}}))
    f = tmp_path / "env.json"
    f.write_bytes(orjson.dumps(env))
    assert main(["env", "diff", str(run), str(f), "--json"]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert [r["key"] for r in rows] == ["environment.os.hostname", "server"]
    assert rows[0]["a"] == "elsewhere" and rows[1]["in_b"] is False


def test_env_command_prints_json_with_all_sections(capsys):
    assert main(["env", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert set(SECTIONS) | {"gpu", "tool"} <= set(doc)


def test_env_diff_of_a_missing_file_says_what_to_give(tmp_path, capsys):
    assert main(["env", "diff", str(tmp_path / "nope.json"), str(tmp_path / "x")]) == 1
    assert "run directory" in capsys.readouterr().err
