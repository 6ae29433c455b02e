"""Absurd command-line values get a clear one-line error before anything is built or sent,
never a hang or an out-of-memory (issue 8; loadgen/limits.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

LOADGEN = [sys.executable, "-m", "loadgen"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--request-rate", "0"], "--request-rate must be a number > 0"),
        (["--request-rate=-inf"], "--request-rate must be a number > 0"),
        (["--request-rate", "1e-300"], "more than 30 days"),
        (["--num-prompts", "1000000000"], "GiB of memory"),
        (["--num-prompts", "3", "--random-input-len", "1000000000"], "GiB of memory"),
        (["--burstiness", "1e-300", "--request-rate", "1e-10"], "more than 30 days"),
        (["--timeout", "inf"], "--timeout must be a number > 0"),
        (["--timeout", "nan"], "--timeout must be a number > 0"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--port", "70000"], "--port must be in 1..65535"),
        (["--max-connections", "-5"], "--max-connections must be >= 0"),
        (["--max-response-bytes", "0"], "--max-response-bytes must be >= 1"),
        (["--trace", "/work/shared/data/burstgpt/BurstGPT_1_rows1-400.csv", "--trace-format",
          "burstgpt", "--trace-rate", "1e12"], "GiB of memory"),
    ],
)
def test_absurd_values_are_refused_at_once_naming_the_flag(args, needle, tmp_path):
    t = time.monotonic()
    p = subprocess.run([*LOADGEN, "run", "--model", "m", "--base-url", "http://127.0.0.1:9",
                        "--result-dir", str(tmp_path), *args], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert time.monotonic() - t < 60  # refused, not attempted
    assert list(tmp_path.iterdir()) == []


def test_a_plan_claiming_a_billion_requests_is_a_clear_error(tmp_path):
    plan = tmp_path / "p.jsonl"
    plan.write_text('{"dataset":"random","description":{},"format":"loadgen-plan",'
                    '"num_requests":1000000000,"version":1}\n'
                    '{"i":0,"input_tokens":1,"item_id":null,"output_tokens":1,"prompt":"a",'
                    '"t_intended":0.0}\n')
    p = subprocess.run([*LOADGEN, "plan", "--plan", str(plan), "-o", str(tmp_path / "o.jsonl")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "header says 1000000000 requests but the file has 1" in p.stderr
