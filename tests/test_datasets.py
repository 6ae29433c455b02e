"""Prompt datasets: ShareGPT, Alpaca, HF (local files), custom JSONL, and their workloads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from arrivals.datasets import (
    DatasetError,
    dataset_workload,
    load_dataset_items,
    read_alpaca,
    read_hf,
    read_jsonl_prompts,
    read_sharegpt,
)

DATA = Path("/work/shared/data")
SHAREGPT_MULTI = DATA / "sharegpt" / "sharegpt_multiturn_500.json"
SHAREGPT_500 = DATA / "sharegpt" / "ShareGPT_V3_filtered_500.json"
ALPACA = DATA / "alpaca" / "alpaca_data_records1-1727.json"


def need(p: Path) -> Path:
    if not p.is_file():
        pytest.skip(f"real data sample {p} is absent (see /work/shared/data/README.md)")
    return p


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


# ---- ShareGPT -------------------------------------------------------------------------------

def test_sharegpt_filtered_500_loads_all_500_first_turn_prompts_without_references():
    items = read_sharegpt(need(SHAREGPT_500))
    assert len(items) == 500
    assert items.info["skipped_no_human_turn"] == 0
    assert all(r is None for r in items.references)  # first turns only, no gpt reply


def test_sharegpt_multiturn_skips_leading_gpt_turns_and_conversations_without_a_human_turn():
    raw = json.loads(need(SHAREGPT_MULTI).read_text(encoding="utf-8"))
    items = read_sharegpt(SHAREGPT_MULTI)
    has_human = [c for c in raw
                 if any(t["from"] == "human" and t["value"].strip() for t in c["conversations"])]
    assert len(items) == len(has_human) == 500 - items.info["skipped_no_human_turn"]
    gpt_first = [c for c in has_human if c["conversations"][0]["from"] == "gpt"]
    assert items.info["started_with_gpt_turn"] == len(gpt_first) > 100
    c = gpt_first[0]
    k = next(i for i, t in enumerate(c["conversations"])
             if t["from"] == "human" and t["value"].strip())
    j = items.item_ids.index(c["id"])
    assert items.prompts[j] == c["conversations"][k]["value"]
    assert items.references[j] == c["conversations"][k + 1]["value"]


def test_sharegpt_multi_turn_flattens_up_to_the_last_human_turn(tmp_path):
    conv = [{"id": "a", "conversations": [
        {"from": "gpt", "value": "orphan answer"}, {"from": "human", "value": "Q1"},
        {"from": "gpt", "value": "A1"}, {"from": "human", "value": "Q2"},
        {"from": "gpt", "value": "A2"}]}]
    items = read_sharegpt(write_json(tmp_path / "c.json", conv), multi_turn=True)
    assert items.prompts == ["User: Q1\n\nAssistant: A1\n\nUser: Q2"]
    assert items.references == ["A2"]
    first = read_sharegpt(tmp_path / "c.json")
    assert first.prompts == ["Q1"] and first.references == ["A1"]


def test_sharegpt_bad_turn_error_names_the_file_and_item(tmp_path):
    p = write_json(tmp_path / "bad.json", [{"id": "x", "conversations": [{"from": "human"}]}])
    with pytest.raises(DatasetError, match=r"bad\.json item 0: turn 0"):
        read_sharegpt(p)


def test_sharegpt_not_json_error_names_the_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("[{", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"broken\.json: not valid JSON"):
        read_sharegpt(p)


def test_missing_dataset_file_error_names_it(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.json: no such file"):
        read_alpaca(tmp_path / "nope.json")


# ---- Alpaca ---------------------------------------------------------------------------------

def test_alpaca_loads_every_record_and_appends_non_empty_inputs():
    raw = json.loads(need(ALPACA).read_text(encoding="utf-8"))
    items = read_alpaca(ALPACA)
    assert len(items) == len(raw) == 1727
    assert items.info["with_input"] == 779
    j = next(i for i, r in enumerate(raw) if r["input"].strip())
    assert items.prompts[j] == raw[j]["instruction"] + "\n\n" + raw[j]["input"]
    assert items.prompts[0] == "Give three tips for staying healthy."
    assert items.references[0] == raw[0]["output"]


def test_alpaca_record_without_instruction_error_names_file_and_item(tmp_path):
    p = write_json(tmp_path / "alp.json", [{"instruction": "ok"}, {"input": "x"}])
    with pytest.raises(DatasetError, match=r"alp\.json item 1"):
        read_alpaca(p)


# ---- custom JSONL ---------------------------------------------------------------------------

def test_jsonl_prompts_keep_their_own_output_len(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "hello there", "output_len": 7}\n\n{"prompt": "x y z"}\n',
                 encoding="utf-8")
    items = read_jsonl_prompts(p)
    assert items.prompts == ["hello there", "x y z"] and items.output_lens == [7, None]
    wl = dataset_workload(items, default_output_len=33, seed=1)
    by_prompt = dict(zip(wl.prompts, wl.output_tokens.tolist(), strict=True))
    assert by_prompt == {"hello there": 7, "x y z": 33}
    assert wl.description["output_len_source"] == {"fixed": 0, "item_output_len": 1,
                                                   "reference": 0, "default": 1}


def test_jsonl_bad_line_error_names_file_and_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "ok"}\n{"prompt": "ok", "output_len": 0}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"p\.jsonl: line 2: 'output_len'"):
        read_jsonl_prompts(p)


# ---- Hugging Face datasets (local files, offline) -------------------------------------------

def test_hf_local_jsonl_with_a_column_mapping(tmp_path):
    pytest.importorskip("datasets", reason="optional dependency 'datasets' not installed")
    p = tmp_path / "qa.jsonl"
    p.write_text("".join(json.dumps({"question": f"q{i} a b", "answer": "w " * (i + 1)}) + "\n"
                         for i in range(5)), encoding="utf-8")
    items = read_hf(p, columns={"prompt": "question", "output": "answer"})
    assert items.prompts == [f"q{i} a b" for i in range(5)]
    wl = dataset_workload(items, seed=0)
    assert sorted(wl.output_tokens.tolist()) == [1, 2, 3, 4, 5]  # words of the answers
    assert wl.description["token_count"] == "words"


def test_hf_missing_column_error_lists_the_columns(tmp_path):
    pytest.importorskip("datasets", reason="optional dependency 'datasets' not installed")
    p = tmp_path / "qa.jsonl"
    p.write_text('{"question": "q"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"qa\.jsonl: no column 'prompt'; it has question"):
        read_hf(p)


def test_hf_unreachable_hub_name_error_names_the_dataset_and_suggests_a_local_file(monkeypatch):
    datasets = pytest.importorskip("datasets", reason="optional dependency 'datasets' absent")
    import huggingface_hub.constants

    # The hub is not reachable from the tests: say so up front instead of waiting for retries.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DatasetError, match=r"no-such-org/no-such-dataset.*local file"):
        read_hf("no-such-org/no-such-dataset")


# ---- workloads ------------------------------------------------------------------------------

def test_dataset_workload_fills_dataset_and_item_ids_and_reference_output_lengths():
    items = read_alpaca(need(ALPACA))
    wl = dataset_workload(items, num_requests=200, request_rate=10.0, seed=3)
    assert len(wl) == 200 and wl.dataset == "alpaca"
    assert len(set(wl.item_ids)) == 200  # a permutation: no repeats below the dataset size
    i = int(wl.item_ids[0])
    assert wl.prompts[0] == items.prompts[i]
    assert wl.output_tokens[0] == max(1, len(items.references[i].split()))
    assert wl.input_tokens[0] == max(1, len(items.prompts[i].split()))
    assert wl.description["token_count"] == "words"
    assert 5.0 < (len(wl) - 1) / wl.duration < 20.0


def test_more_requests_than_items_repeats_the_dataset_and_says_so(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"}\n', encoding="utf-8")
    wl = dataset_workload(read_jsonl_prompts(p), num_requests=7, output_len=5)
    assert sorted(wl.prompts) == sorted(["a", "b", "c"] * 2 + [wl.prompts[6]])
    assert wl.description["repeated_passes"] == 3
    assert set(wl.output_tokens.tolist()) == {5}


def test_same_seed_same_prompts_different_seed_different_order():
    items = read_sharegpt(need(SHAREGPT_500))
    a = dataset_workload(items, num_requests=50, seed=1)
    b = dataset_workload(items, num_requests=50, seed=1)
    c = dataset_workload(items, num_requests=50, seed=2)
    assert a.item_ids == b.item_ids and a.item_ids != c.item_ids


def test_cli_flags_build_a_sharegpt_workload_with_a_fixed_output_len():
    from loadgen.cli import build_parser
    from loadgen.workload_flags import build_workload

    need(SHAREGPT_MULTI)
    ns = build_parser().parse_args([
        "plan", "-o", "x", "--dataset-name", "sharegpt", "--dataset-path", str(SHAREGPT_MULTI),
        "--num-prompts", "40", "--request-rate", "4", "--output-len", "64", "--seed", "5"])
    wl = build_workload(ns)
    assert wl.dataset == "sharegpt" and len(wl) == 40 and len(wl.item_ids) == 40
    assert set(wl.output_tokens.tolist()) == {64}
    assert wl.description["output_len_source"]["fixed"] == 40
    assert math.isclose(wl.description["request_rate"], 4.0)


def test_cli_dataset_without_path_is_a_usage_error():
    from loadgen.cli import build_parser
    from loadgen.flags import UsageError
    from loadgen.workload_flags import build_workload

    ns = build_parser().parse_args(["plan", "-o", "x", "--dataset-name", "alpaca"])
    with pytest.raises(UsageError, match="--dataset-path"):
        build_workload(ns)


def test_load_dataset_items_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset_items("nope", "x")


def test_word_count_is_the_recorded_estimate_and_a_tokenizer_counter_replaces_it(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "one two three"}\n', encoding="utf-8")
    wl = dataset_workload(read_jsonl_prompts(p), token_counter=lambda s: len(s),
                          token_counter_name="tokenizer:chars")
    assert wl.input_tokens.tolist() == [13] and wl.description["token_count"] == "tokenizer:chars"
    assert np.array_equal(dataset_workload(read_jsonl_prompts(p)).input_tokens, [3])
