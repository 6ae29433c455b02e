"""Workload flags shared by ``loadgen run`` and ``loadgen plan``, and the Workload they describe."""

from __future__ import annotations

import argparse
import math

from loadgen.flags import UsageError, _non_negative_int, _positive_float, _positive_int, _ratio
from loadgen.limits import WorkloadTooLarge, available_bytes, check_build, check_duration

TRACE_FORMATS = ("burstgpt", "azure", "mooncake", "csv", "jsonl")  # arrivals.traces.FORMATS


def add_workload_arguments(w) -> None:
    """Flags that build a workload (shared by ``loadgen run`` and ``loadgen plan``)."""
    w.add_argument("--dataset-name", default="random",
                   choices=["random", "sharegpt", "alpaca", "hf", "jsonl"],
                   help="prompt source: random (synthetic word prompts of the given lengths), "
                   "sharegpt, alpaca, hf (a Hugging Face dataset or local data file) or jsonl "
                   "({\"prompt\", \"output_len\"?} per line); needs --dataset-path")
    w.add_argument("--dataset-path", default=None, metavar="PATH",
                   help="the dataset file (or, for hf, a hub name or local file)")
    w.add_argument("--dataset-multi-turn", action="store_true",
                   help="sharegpt: send the whole conversation up to its last human turn, "
                   "flattened (default: the first human turn)")
    w.add_argument("--dataset-sessions", "--multi-turn", action="store_true",
                   dest="dataset_sessions",
                   help="sharegpt: send each conversation as a multi-turn session: turn k+1 "
                   "(with the history so far, recorded replies included) goes out a "
                   "--think-time after turn k's response ends; sessions start at "
                   "--request-rate; --num-prompts counts sessions")
    w.add_argument("--think-time", default=None, metavar="DIST",
                   help="think time between a response and the next turn of a session: S "
                   "(constant seconds), exp:MEAN, gamma:MEAN:CV, lognormal:MEAN:CV or "
                   "uniform:A:B; needed with --dataset-sessions; with --trace-sessions it "
                   "replaces the trace's own think times")
    w.add_argument("--session-max-turns", type=_positive_int("--session-max-turns"),
                   default=None, metavar="N",
                   help="with --dataset-sessions: keep at most the first N turns of each "
                   "conversation (long chats can outgrow a model's context)")
    w.add_argument("--hf-split", default="train", help="split of an hf dataset (default train)")
    w.add_argument("--hf-columns", default=None, metavar="prompt=COL[,output=COL]",
                   help="columns of an hf dataset holding the prompt and the reference answer "
                   "(default prompt=prompt)")
    w.add_argument("--output-len", type=_positive_int("--output-len"), default=None,
                   help="fixed output length (max_tokens) for dataset prompts (default: the "
                   "length of the dataset's reference answer, else --random-output-len)")
    w.add_argument("--from-fit", default=None, metavar="MODEL.json",
                   help="generate requests from a model fitted by `loadgen workload fit` "
                   "(at --request-rate, default the fitted rate)")
    w.add_argument("--length-scale", type=_positive_float("--length-scale"), default=1.0,
                   metavar="X", help="with --from-fit: multiply every length by X (default 1)")
    w.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="local tokenizer (tokenizer.json or a folder holding one): counts "
                   "dataset tokens and builds exact-length prompts")
    w.add_argument("--prompt-tokens-from", default=None, choices=["tokenizer", "server", "words"],
                   help="how synthetic prompts (trace, --from-fit, random) get their token "
                   "length: exactly with --tokenizer, exactly with the server's /tokenize "
                   "(falls back to words if it does not answer), or common words ~1 token "
                   "each (the default)")
    w.add_argument("--tokenize-url", default=None, metavar="URL",
                   help="server for --prompt-tokens-from server (default: --base-url of run)")
    w.add_argument("--hash-id-prefixes", action="store_true",
                   help="mooncake traces: requests with equal leading hash_ids share equal "
                   "512-token prompt prefixes")
    w.add_argument("--num-prompts", type=_positive_int("--num-prompts"), default=None,
                   help="number of requests (default 1000; with --trace or --plan: a cap, "
                   "default all; with sessions: the number of sessions)")
    w.add_argument("--request-rate", type=_positive_float("--request-rate", allow_inf=True),
                   default=math.inf, help="mean request rate in requests/s (default inf: all at "
                   "t=0, as vllm bench serve); the schedule is open loop")
    w.add_argument("--burstiness", type=_positive_float("--burstiness"), default=1.0,
                   help="gamma shape k of inter-arrival times: CV = 1/sqrt(k); 1 = Poisson "
                   "(default), < 1 burstier, > 1 smoother")
    w.add_argument("--arrival", choices=["poisson", "gamma", "constant"], default=None,
                   help="arrival process (default: poisson, or gamma when --burstiness != 1)")
    w.add_argument("--random-input-len", type=_positive_int("--random-input-len"), default=1024,
                   help="input length in tokens (default 1024)")
    w.add_argument("--random-output-len", type=_positive_int("--random-output-len"), default=128,
                   help="output length (max_tokens) per request (default 128)")
    w.add_argument("--random-range-ratio", type=_ratio, default=0.0,
                   help="lengths uniform in [len*(1-r), len*(1+r)] (default 0: fixed)")
    w.add_argument("--seed", type=_non_negative_int("--seed"), default=0,
                   help="seed of the schedule, lengths and prompts (an integer >= 0)")
    w.add_argument("--trace", default=None, metavar="FILE",
                   help="replay a request trace instead of the random dataset (docs/arrivals.md)")
    w.add_argument("--trace-format", default=None, choices=list(TRACE_FORMATS),
                   help="format of --trace: burstgpt, azure, mooncake, or csv/jsonl with "
                   "--trace-columns")
    w.add_argument("--trace-columns", default=None, metavar="time=COL,input=COL,output=COL",
                   help="column mapping of a csv/jsonl trace (optional keys: model, log_type, "
                   "session_id, elapsed: seconds each request took, for --trace-sessions)")
    w.add_argument("--trace-time-unit", default="s", choices=["s", "ms", "us", "ns", "iso"],
                   help="unit of the time column of a csv/jsonl trace (default s)")
    w.add_argument("--trace-filter", action="append", default=[], metavar="KEY=VALUE",
                   help="keep only requests with model=NAME, log_type=NAME or success=true|false; "
                   "repeatable (applied first)")
    w.add_argument("--trace-window", default=None, metavar="START:END",
                   help="keep the requests in [START, END) seconds from the trace's first one "
                   "(either side may be empty), re-timed to start at 0")
    w.add_argument("--trace-speedup", type=_positive_float("--trace-speedup"), default=None,
                   metavar="X", help="divide every trace time by X (X=2: twice the rate)")
    w.add_argument("--trace-rate", type=_positive_float("--trace-rate"), default=None,
                   metavar="R", help="thin (or superpose time-shifted copies of) the trace to a "
                   "mean rate of R req/s, keeping its bursts (applied last)")
    w.add_argument("--trace-sessions", action="store_true",
                   help="replay the trace's sessions (BurstGPT 8-column 'Session ID', or a "
                   "csv/jsonl session_id column): first turns at the trace's times, each later "
                   "turn with the history so far, sent the trace's think time (next request "
                   "time - this one - its 'Elapsed time') after the previous response ends")
    w.add_argument("--trace-session-input", default="total", choices=["total", "turn"],
                   help="with --trace-sessions: the trace's input length of a turn is the "
                   "whole prompt, history included (total, default: what the traced service "
                   "counted), or only the new user text (turn: the history comes on top)")
    w.add_argument("--trace-keep-failed", action="store_true",
                   help="replay the trace's failed (0-token) requests too, clipped to 1 token "
                   "(default: drop them and record how many)")
    w.add_argument("--plan", default=None, metavar="FILE",
                   help="replay a plan written by `loadgen plan` exactly (other workload flags "
                   "are ignored, except --num-prompts as a cap)")


def _trace_filters(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        k, sep, v = item.partition("=")
        k, v = k.strip(), v.strip()
        if not sep or k not in ("model", "log_type", "success"):
            raise UsageError(f"--trace-filter {item!r}: expected model=NAME, log_type=NAME or "
                             "success=true|false")
        if k == "success":
            if v.lower() not in ("true", "false"):
                raise UsageError(f"--trace-filter success={v!r}: expected true or false")
            out[k] = v.lower() == "true"
        else:
            out.setdefault(k, []).append(v)
    return out


def _trace_window(s: str) -> tuple[float | None, float | None]:
    a, sep, b = s.partition(":")
    try:
        if not sep:
            raise ValueError
        return (float(a) if a.strip() else None, float(b) if b.strip() else None)
    except ValueError:
        raise UsageError(f"--trace-window must be START:END in seconds (either may be empty), "
                         f"got {s!r}") from None


def build_workload(ns: argparse.Namespace):
    """The Workload the workload flags describe: a plan, a trace, or the random dataset.

    Trace transforms apply in this order: --trace-filter, --trace-window, --trace-speedup,
    --trace-rate; then failed requests are dropped (unless --trace-keep-failed) and
    --num-prompts caps the count. A workload too large for this machine's memory, or whose
    schedule would last more than 30 days, is refused before it is built (loadgen/limits.py).
    """
    try:
        wl = _build_workload(ns)
        check_duration(wl.duration, "workload")
    except WorkloadTooLarge as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        if "burstiness" in str(e):  # an arrival-process parameter out of its usable range
            raise UsageError(f"--burstiness {ns.burstiness!r}: {e}") from None
        raise
    return wl


def _check_file(path: str, factor: float, flag: str) -> None:
    """A file read whole into memory: refuse it if ``factor`` times its size will not fit."""
    import os

    try:
        size = os.path.getsize(path)
    except OSError:
        return  # the reader names a missing file
    have = available_bytes()
    if factor * size > 0.5 * have:
        raise WorkloadTooLarge(f"{flag} {path}: {size / 2**30:.3g} GiB; reading it needs about "
                               f"{factor * size / 2**30:.3g} GiB of memory ({have / 2**30:.3g} "
                               "GiB available); use a part of it")


def _build_workload(ns: argparse.Namespace):
    if ns.plan:
        _check_file(ns.plan, 3.0, "--plan")
        if ns.trace:
            raise UsageError("--plan and --trace are exclusive: a plan already holds its requests")
        from arrivals.plan import read_plan

        wl = read_plan(ns.plan)
        n = ns.num_prompts
        if n is not None and n < (len(wl) if wl.sessions is None else wl.sessions.n_sessions):
            from dataclasses import replace

            wl = wl.head(n)
            wl = replace(wl, description={**wl.description, "plan": str(ns.plan),
                                          "capped_to": n})
        return wl
    if ns.trace and getattr(ns, "from_fit", None):
        raise UsageError("--trace and --from-fit are exclusive")
    _check_session_flags(ns)
    if getattr(ns, "from_fit", None) or getattr(ns, "dataset_name", "random") != "random" \
            or getattr(ns, "prompt_tokens_from", None) or getattr(ns, "tokenizer", None) \
            or getattr(ns, "hash_id_prefixes", False):
        return _build_data_workload(ns)
    return _build_base(ns)


def _read_trace(ns: argparse.Namespace):
    """The --trace file with the declared transforms applied, in their fixed order."""
    from arrivals import transforms as tf
    from arrivals.traces import parse_columns, read_trace

    if not ns.trace_format:
        raise UsageError("--trace needs --trace-format (burstgpt, azure, mooncake, csv, jsonl)")
    _check_file(ns.trace, 8.0, "--trace")
    try:
        cols = parse_columns(ns.trace_columns) if ns.trace_columns else None
    except ValueError as e:
        raise UsageError(f"--trace-columns: {e}") from None
    tr = read_trace(ns.trace, ns.trace_format, columns=cols, time_unit=ns.trace_time_unit)
    filters = _trace_filters(ns.trace_filter)
    if filters:
        tr = tf.filter_rows(tr, **filters)
    if ns.trace_window:
        tr = tf.window(tr, *_trace_window(ns.trace_window))
    if ns.trace_speedup:
        tr = tf.speedup(tr, ns.trace_speedup)
    if ns.trace_rate:
        import numpy as np

        grow = ns.trace_rate / tr.mean_rate if len(tr) > 1 and tr.mean_rate > 0 else 1.0
        rows = min(len(tr) * max(1.0, grow), float(ns.num_prompts or math.inf))
        check_build(rows, float(np.mean(tr.input_tokens)) if len(tr) else 0.0,
                    f"--trace-rate {ns.trace_rate:g}")
        tr = tf.to_rate(tr, ns.trace_rate, seed=ns.seed)
    return tr


def _build_base(ns: argparse.Namespace, keep: dict | None = None):
    """The trace or random workload of the flags (with word prompts); ``keep`` gets the trace."""
    if ns.trace:
        from arrivals.trace_workload import trace_workload

        tr = _read_trace(ns)
        if keep is not None:
            keep["trace"] = tr
        if len(tr):
            import numpy as np

            check_build(min(len(tr), ns.num_prompts or len(tr)), float(np.mean(tr.input_tokens)),
                        f"--trace {ns.trace}")
        if getattr(ns, "trace_sessions", False):
            return _trace_sessions(ns, tr)
        return trace_workload(tr, seed=ns.seed, drop_failed=not ns.trace_keep_failed,
                              max_requests=ns.num_prompts)
    from arrivals.workload import synthetic_workload

    n = ns.num_prompts or 1000
    check_build(n, ns.random_input_len * (1 + ns.random_range_ratio),
                f"--num-prompts {n} --random-input-len {ns.random_input_len}")
    if math.isfinite(ns.request_rate):  # the mean span, before drawing it
        check_duration(n / ns.request_rate, f"--num-prompts {n} --request-rate {ns.request_rate:g}")

    process = ns.arrival or ("gamma" if ns.burstiness != 1.0 else "poisson")
    return synthetic_workload(
        num_requests=ns.num_prompts or 1000, request_rate=ns.request_rate, process=process,
        burstiness=ns.burstiness, input_len=ns.random_input_len, output_len=ns.random_output_len,
        range_ratio=ns.random_range_ratio, seed=ns.seed,
    )


def _think(ns: argparse.Namespace):
    from arrivals.think import parse_think_time

    if not getattr(ns, "think_time", None):
        return None
    try:
        return parse_think_time(ns.think_time)
    except ValueError as e:
        raise UsageError(f"--think-time: {e}") from None


def _check_session_flags(ns: argparse.Namespace) -> None:
    """Session flags are only valid where they mean something; say what to use instead."""
    ds = getattr(ns, "dataset_sessions", False)
    ts = getattr(ns, "trace_sessions", False)
    if ds and getattr(ns, "dataset_name", "random") != "sharegpt":
        raise UsageError("--dataset-sessions needs --dataset-name sharegpt (conversations); "
                         "for a trace with session ids use --trace-sessions")
    if ds and getattr(ns, "dataset_multi_turn", False):
        raise UsageError("--dataset-sessions and --dataset-multi-turn are exclusive: sessions "
                         "send each turn as its own request, --dataset-multi-turn one "
                         "flattened request per conversation")
    if ds and not getattr(ns, "think_time", None):
        raise UsageError("--dataset-sessions needs --think-time DIST (ShareGPT has no timing), "
                         "e.g. --think-time exp:5 (exponential, mean 5 s) or --think-time 0")
    if ts and not ns.trace:
        raise UsageError("--trace-sessions needs --trace FILE")
    if ts and ns.trace_rate:
        raise UsageError("--trace-sessions cannot be combined with --trace-rate (thinning "
                         "drops turns and superposition duplicates sessions); change the rate "
                         "with --trace-speedup")
    if ts and (getattr(ns, "prompt_tokens_from", None) or getattr(ns, "hash_id_prefixes", False)):
        raise UsageError("--trace-sessions builds word prompts with their history; it cannot "
                         "be combined with --prompt-tokens-from or --hash-id-prefixes")
    if getattr(ns, "think_time", None) and not (ds or ts):
        raise UsageError("--think-time applies to sessions: add --dataset-sessions (sharegpt) "
                         "or --trace-sessions")
    if getattr(ns, "session_max_turns", None) and not ds:
        raise UsageError("--session-max-turns applies to --dataset-sessions")


def _trace_sessions(ns: argparse.Namespace, tr, tok=None):
    from arrivals.conversations import trace_session_workload

    try:
        return trace_session_workload(
            tr, seed=ns.seed, think=_think(ns), input_mode=ns.trace_session_input,
            drop_failed=not ns.trace_keep_failed, max_sessions=ns.num_prompts,
            token_counter=tok.count if tok is not None else None,
            token_counter_name=f"tokenizer:{tok.source}" if tok is not None else
            "words (whitespace-word estimate)")
    except ValueError as e:
        raise UsageError(f"--trace-sessions: {e}") from None


def _tokenize_url(ns: argparse.Namespace) -> str | None:
    if getattr(ns, "tokenize_url", None):
        return ns.tokenize_url
    if getattr(ns, "base_url", None):
        return ns.base_url
    if getattr(ns, "host", None) and getattr(ns, "port", None):
        return f"http://{ns.host}:{ns.port}"
    return None


def _build_data_workload(ns: argparse.Namespace):
    """Dataset prompts, a fitted model, or exact-length / prefix-sharing prompts (arrivals)."""
    from dataclasses import replace

    import numpy as np

    from arrivals.tokens import (
        ServerTokenizer,
        hash_id_prompts,
        load_tokenizer,
        prompts_for_lengths,
    )

    tok = load_tokenizer(ns.tokenizer) if ns.tokenizer else None
    source = ns.prompt_tokens_from or ("tokenizer" if tok is not None else None)
    process = ns.arrival or ("gamma" if ns.burstiness != 1.0 else "poisson")
    if ns.dataset_name != "random":
        if ns.trace or ns.from_fit:
            raise UsageError(f"--dataset-name {ns.dataset_name} cannot be combined with "
                             "--trace or --from-fit (they bring their own requests)")
        if not ns.dataset_path:
            raise UsageError(f"--dataset-name {ns.dataset_name} needs --dataset-path PATH")
        if ns.prompt_tokens_from or ns.hash_id_prefixes:
            raise UsageError("--prompt-tokens-from and --hash-id-prefixes apply to synthetic "
                             "prompts (trace, --from-fit, random), not to dataset prompts")
        from arrivals.datasets import dataset_workload, load_dataset_items, parse_hf_columns

        try:
            cols = parse_hf_columns(ns.hf_columns) if ns.hf_columns else None
        except ValueError as e:
            raise UsageError(f"--hf-columns: {e}") from None
        if getattr(ns, "dataset_sessions", False):
            from arrivals.conversations import dataset_session_workload
            from arrivals.datasets.sharegpt import read_sharegpt_conversations

            convs, info = read_sharegpt_conversations(ns.dataset_path)
            return dataset_session_workload(
                convs, dataset="sharegpt", num_sessions=ns.num_prompts,
                request_rate=ns.request_rate, process=process, burstiness=ns.burstiness,
                think=_think(ns), output_len=ns.output_len,
                default_output_len=ns.random_output_len, max_turns=ns.session_max_turns,
                token_counter=tok.count if tok is not None else None,
                token_counter_name=f"tokenizer:{tok.source}" if tok is not None else
                "words (whitespace-word estimate)", seed=ns.seed, info=info)
        items = load_dataset_items(ns.dataset_name, ns.dataset_path,
                                   multi_turn=ns.dataset_multi_turn, hf_split=ns.hf_split,
                                   hf_columns=cols)
        return dataset_workload(
            items, num_requests=ns.num_prompts, request_rate=ns.request_rate, process=process,
            burstiness=ns.burstiness, output_len=ns.output_len,
            default_output_len=ns.random_output_len,
            token_counter=tok.count if tok is not None else None,
            token_counter_name=f"tokenizer:{tok.source}" if tok is not None else
            "words (whitespace-word estimate)", seed=ns.seed)
    keep: dict = {}
    if ns.from_fit:
        from arrivals.fit import WorkloadModel, model_workload

        check_build(ns.num_prompts or 1000, 0.0, f"--num-prompts {ns.num_prompts}")
        model = WorkloadModel.load(ns.from_fit)
        rate = None if ns.request_rate == math.inf else ns.request_rate
        wl = model_workload(model, ns.num_prompts or 1000, request_rate=rate,
                            length_scale=ns.length_scale, seed=ns.seed)
    elif getattr(ns, "trace_sessions", False):
        return _trace_sessions(ns, _read_trace(ns), tok)
    else:
        wl = _build_base(ns, keep)
    rng_seed = ns.seed + 1  # text differs from the schedule's stream
    if ns.hash_id_prefixes:
        tr = keep.get("trace")
        if tr is None or "hash_ids" not in tr.extra:
            raise UsageError("--hash-id-prefixes needs a --trace with hash_ids "
                             "(--trace-format mooncake)")
        by_row = dict(zip(tr.row.tolist(), tr.extra["hash_ids"], strict=True))
        ids = [by_row[int(i.rsplit(":", 1)[1])] for i in wl.item_ids or []]
        if source == "server":
            raise UsageError("--hash-id-prefixes works with --prompt-tokens-from tokenizer or "
                             "words")
        prompts, info = hash_id_prompts(ids, wl.input_tokens,
                                        tokenizer=tok if source == "tokenizer" else None,
                                        seed=rng_seed)
    elif source is not None:
        server = None
        if source == "server":
            url = _tokenize_url(ns)
            if not url:
                raise UsageError("--prompt-tokens-from server needs --tokenize-url URL")
            server = ServerTokenizer(url, getattr(ns, "served_model_name", None)
                                     or getattr(ns, "model", None))
        prompts, info = prompts_for_lengths(np.asarray(wl.input_tokens), source,
                                            tokenizer=tok, server=server, seed=rng_seed)
    else:
        return wl
    desc = {**wl.description, "prompts": info,
            "prompt_text": f"synthetic, lengths from {info['prompt_tokens_from']}"}
    return replace(wl, prompts=prompts, description=desc)
