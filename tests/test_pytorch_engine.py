"""The PyTorch server's batching engine, driven step by step on the tiny random Llama.

No HTTP and no threads: ``Engine.iterate()`` is called directly. Decoding is greedy, so a
sequence's tokens are a deterministic function of its prompt; batching must not change them.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from servers.models.hf_tiny import cached_tiny_hf  # noqa: E402
from servers.pytorch.engine import Engine, Sequence  # noqa: E402

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22], list(range(30, 70)), [100],
           [200, 201, 202, 203, 204]]


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    path = cached_tiny_hf("tiny")
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()


def _drain(engine: Engine, max_iterations: int = 500) -> int:
    n = 0
    with torch.inference_mode():
        while (engine.num_running or engine.num_waiting) and n < max_iterations:
            engine.iterate()
            n += 1
    return n


def _alone(model, prompt: list[int], n: int) -> list[int]:
    engine = Engine(model, [], max_batch=1)
    seq = Sequence(0, prompt, n)
    engine.submit(seq)
    _drain(engine)
    return seq.output_ids


def test_continuous_batching_gives_each_sequence_the_tokens_it_gets_alone(model):
    # Sequences join every other iteration and leave at different lengths, so the batch's
    # left-padded cache is re-padded on joins and trimmed on leaves many times.
    alone = [_alone(model, p, 12) for p in PROMPTS]
    engine = Engine(model, [], max_batch=3)
    seqs = [Sequence(i, p, 12 - (i % 3)) for i, p in enumerate(PROMPTS)]
    with torch.inference_mode():
        for it in range(200):
            if it % 2 == 0 and it // 2 < len(seqs):
                engine.submit(seqs[it // 2])
            engine.iterate()
            if it > 2 * len(seqs) and not (engine.num_running or engine.num_waiting):
                break
    for seq, ref in zip(seqs, alone, strict=True):
        assert seq.finish_reason == "length"
        assert seq.output_ids == ref[:len(seq.output_ids)]
    assert max(s.batch_max for s in seqs) == 3  # the cap was reached, never exceeded
    assert engine.counters.batch_max_seen == 3


def test_static_batching_admits_nobody_until_the_whole_batch_has_finished(model):
    engine = Engine(model, [], max_batch=4, batching="static")
    first = [Sequence(i, PROMPTS[i], 6) for i in range(2)]
    late = Sequence(9, PROMPTS[2], 3)
    for s in first:
        engine.submit(s)
    with torch.inference_mode():
        engine.iterate()
        engine.submit(late)  # a free slot exists, but the batch is running
        while any(s.finish_reason is None for s in first):
            assert late.output_ids == [] and engine.num_waiting == 1
            engine.iterate()
    _drain(engine)
    assert late.finish_reason == "length" and len(late.output_ids) == 3
    assert [s.batch_max for s in first] == [2, 2] and late.batch_max == 1


def test_continuous_batching_admits_into_a_free_slot_at_the_next_step(model):
    engine = Engine(model, [], max_batch=4, batching="continuous")
    first = Sequence(0, PROMPTS[0], 20)
    late = Sequence(1, PROMPTS[1], 5)
    engine.submit(first)
    with torch.inference_mode():
        engine.iterate()
        engine.submit(late)
        engine.iterate()
    assert len(late.output_ids) == 2  # prefill token + one batched decode step
    assert engine.num_running == 2 and late.batch_max == 2
    _drain(engine)


def test_eos_stops_unless_ignore_eos_and_is_masked_before_min_tokens(model):
    # Make EOS the token the model picks first for this prompt.
    eos = _alone(model, PROMPTS[0], 1)[0]
    stop = Sequence(0, PROMPTS[0], 8)
    forced = Sequence(1, PROMPTS[0], 8, ignore_eos=True)
    at_least = Sequence(2, PROMPTS[0], 8, min_tokens=3)
    engine = Engine(model, [eos], max_batch=4)
    for s in (stop, forced, at_least):
        engine.submit(s)
    _drain(engine)
    assert (stop.finish_reason, stop.output_ids) == ("stop", [eos])
    assert forced.finish_reason == "length" and len(forced.output_ids) == 8
    assert forced.output_ids[0] == eos  # ignore_eos samples EOS like any token
    assert len(at_least.output_ids) >= 3 and eos not in at_least.output_ids[:3]


def test_an_aborted_sequence_leaves_the_batch_and_the_others_continue(model):
    engine = Engine(model, [], max_batch=4)
    keep, gone = Sequence(0, PROMPTS[0], 10), Sequence(1, PROMPTS[3], 10)
    engine.submit(keep)
    engine.submit(gone)
    with torch.inference_mode():
        engine.iterate()
        engine.abort(gone)
        engine.iterate()
    assert gone.finish_reason == "abort" and engine.num_running == 1
    _drain(engine)
    assert keep.output_ids == _alone(model, PROMPTS[0], 10)
    assert engine.counters.requests_aborted == 1 and engine.counters.requests_finished == 1


def test_warmup_leaves_an_empty_engine_with_zero_counters(model):
    engine = Engine(model, [], max_batch=4)
    assert engine.warmup() > 0
    assert (engine.num_running, engine.num_waiting) == (0, 0)
    assert engine.counters.generation_tokens == 0 and engine.counters.decode_steps == 0
    seq = Sequence(0, PROMPTS[0], 5)
    engine.submit(seq)
    _drain(engine)
    assert seq.output_ids == _alone(model, PROMPTS[0], 5)
