"""A cell as a ``loadgen sweep`` command line (pure).

The matrix runs each cell through ``analysis.sweep.run_sweep`` with the namespace parsed from
this argv, so a cell is exactly what ``loadgen sweep`` would do with these flags, and the argv
is written into every run's manifest: any single cell can be re-run by hand.
"""

from __future__ import annotations

import os
import re
from typing import Any

import orjson

from loadgen.matrix.cells import Cell

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(s: str, env: dict[str, str] | None = None) -> str:
    """``${NAME}`` and ``${NAME:-default}`` from the environment (a shell's rules: the default
    applies when NAME is unset or empty); ``~`` at the start is the home directory. An unset
    NAME without a default is a KeyError naming it."""
    env = os.environ if env is None else env

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        v = env.get(name)
        if v:
            return v
        if default is not None:
            return default
        raise KeyError(f"${{{name}}} is not set; set it or write ${{{name}:-DEFAULT}}")

    return os.path.expanduser(_VAR_RE.sub(sub, s))


def _rates(load: dict[str, Any]) -> str:
    r = load["rates"]
    return "auto" if r == "auto" else ",".join(f"{x:g}" for x in r)


def workload_args(wl: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    """The workload flags of ``loadgen run`` for a cell's workload table."""
    a: list[str] = []

    def path(v: str) -> str:
        return expand_vars(v, env)

    if wl.get("trace"):
        a += ["--trace", path(wl["trace"]), "--trace-format", wl["trace_format"],
              "--trace-time-unit", wl.get("trace_time_unit", "s")]
        if wl.get("trace_columns"):
            a += ["--trace-columns", wl["trace_columns"]]
        t = wl.get("transforms") or {}
        for f in t.get("filter", []):
            a += ["--trace-filter", f]
        if t.get("window"):
            a += ["--trace-window", t["window"]]
        if t.get("speedup"):
            a += ["--trace-speedup", f"{t['speedup']:g}"]
        if t.get("keep_failed"):
            a.append("--trace-keep-failed")
    elif wl.get("from_fit"):
        a += ["--from-fit", path(wl["from_fit"]), "--length-scale", f"{wl['length_scale']:g}"]
    else:
        a += ["--dataset-name", wl.get("dataset", "random")]
        if wl.get("path"):
            a += ["--dataset-path", path(wl["path"])]
        if wl.get("multi_turn"):
            a.append("--dataset-multi-turn")
        if wl.get("dataset") == "hf":
            a += ["--hf-split", wl.get("hf_split", "train")]
            if wl.get("hf_columns"):
                a += ["--hf-columns", wl["hf_columns"]]
    a += ["--random-input-len", str(wl.get("input_len", 1024)),
          "--random-output-len", str(wl.get("random_output_len", 128)),
          "--random-range-ratio", f"{wl.get('range_ratio', 0.0):g}"]
    if wl.get("output_len"):
        a += ["--output-len", str(wl["output_len"])]
    if wl.get("arrival"):
        a += ["--arrival", wl["arrival"]]
    a += ["--burstiness", f"{wl.get('burstiness', 1.0):g}", "--seed", str(wl.get("seed", 0))]
    if wl.get("tokenizer"):
        a += ["--tokenizer", path(wl["tokenizer"])]
    if wl.get("prompt_tokens_from"):
        a += ["--prompt-tokens-from", wl["prompt_tokens_from"]]
    return a


def client_args(client: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    a: list[str] = []
    if client.get("endpoint"):
        a += ["--endpoint", client["endpoint"]]
    if client.get("stream") is False:
        a.append("--no-stream")
    if client.get("include_usage") is False:
        a.append("--no-usage")
    if client.get("ignore_eos"):
        a.append("--ignore-eos")
    if client.get("timeout_s"):
        a += ["--timeout", f"{client['timeout_s']:g}"]
    for k, v in (client.get("headers") or {}).items():
        a += ["--header", f"{k}={v}"]
    if client.get("extra_body"):
        a += ["--extra-body", orjson.dumps(client["extra_body"]).decode()]
    if client.get("api_key_env"):
        env = os.environ if env is None else env
        key = env.get(client["api_key_env"])
        if key:
            a += ["--api-key", key]  # redacted from the manifest by loadgen.manifest
    return a


def load_args(load: dict[str, Any]) -> list[str]:
    a = ["--rates", _rates(load), "--duration-per-rate", f"{load['duration_per_rate_s']:g}",
         "--auto-fractions", ",".join(f"{f:g}" for f in load["auto_fractions"]),
         "--probe-requests", str(load["probe_requests"]),
         "--max-error-fraction", f"{load['max_error_fraction']:g}",
         "--min-throughput-ratio", f"{load['min_throughput_ratio']:g}",
         "--max-latency-growth", f"{load['max_latency_growth']:g}",
         "--max-send-lag-ms", f"{load['max_send_lag_ms']:g}"]
    if load.get("num_prompts"):
        a += ["--num-prompts", str(load["num_prompts"])]
    if load.get("probe_rate"):
        a += ["--probe-rate", f"{load['probe_rate']:g}"]
    if not load["stop_when_saturated"]:
        a.append("--no-stop")
    return a


def sweep_argv(cell: Cell, base_url: str, model: str, result_dir: str, run_name: str,
               env: dict[str, str] | None = None) -> list[str]:
    """``loadgen sweep`` arguments (without the program name) that run ``cell``."""
    c = cell.config
    return ["sweep", "--base-url", base_url, "--model", model,
            *client_args(c["client"], env), *workload_args(c["workload"], env),
            *load_args(c["load"]),
            "--result-dir", result_dir, "--run-name", run_name, "--quiet", "--no-progress"]
