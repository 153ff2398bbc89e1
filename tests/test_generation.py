"""Batched generation with the tiny trained adapter: order, batching, sampling, log-probs."""

from __future__ import annotations

import math

import pytest

from text2sql.inference.hf import (
    _count_until_stop,
    _logprob_recorder,
    generate,
    load_for_inference,
    stop_token_ids,
)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_adapter):
    return load_for_inference(tiny_adapter)


@pytest.fixture(scope="module")
def prompts(prepared_rows):
    # Different lengths, not sorted, so batching reorders them internally.
    rows = prepared_rows["eval"]
    picked = sorted(rows[:40], key=lambda r: len(r["prompt"][1]["content"]))
    return [picked[i]["prompt"] for i in (39, 0, 20, 5, 33, 12)]


def test_batched_greedy_equals_one_by_one_in_input_order(model_and_tokenizer, prompts):
    model, tok = model_and_tokenizer
    batched = generate(model, tok, prompts, batch_size=4, max_new_tokens=24, progress=False)
    single = [generate(model, tok, [p], batch_size=1, max_new_tokens=24, progress=False)[0]
              for p in prompts]
    assert [g.texts for g in batched] == [g.texts for g in single]
    assert all(len(g.texts) == 1 and g.logprobs == [] for g in batched)
    assert all(0 < g.new_tokens <= 24 and g.seconds > 0 for g in batched)


def test_left_padding_and_stop_tokens(model_and_tokenizer):
    model, tok = model_and_tokenizer
    assert tok.padding_side == "left"
    stops = stop_token_ids(tok)
    assert tok.convert_tokens_to_ids("<|im_end|>") in stops
    assert _count_until_stop([5, 6, stops[0], 0, 0], stops) == 3
    assert _count_until_stop([5, 6, 7], stops) == 3


def test_sampling_gives_n_scored_candidates_reproducibly(model_and_tokenizer, prompts):
    model, tok = model_and_tokenizer
    kw = dict(batch_size=6, max_new_tokens=16, num_samples=3, temperature=1.0, seed=7,
              progress=False)
    first = generate(model, tok, prompts[:3], **kw)
    again = generate(model, tok, prompts[:3], **kw)
    assert [g.texts for g in first] == [g.texts for g in again]
    for g in first:
        assert len(g.texts) == 3 and len(g.logprobs) == 3
        assert all(lp <= 0 and math.isfinite(lp) for lp in g.logprobs)
    other_seed = generate(model, tok, prompts[:3], **{**kw, "seed": 8})
    assert [g.texts for g in other_seed] != [g.texts for g in first]


def test_recorded_logprob_is_the_models_sequence_logprob(model_and_tokenizer, prompts):
    """The streamed sum equals a teacher-forced forward pass over each sampled answer,
    up to and including its stop token, whatever the padding of the batch."""
    import torch

    model, tok = model_and_tokenizer
    stops = stop_token_ids(tok)
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
             for p in prompts[:2]]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    recorder = _logprob_recorder(stops)
    torch.manual_seed(3)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=12, do_sample=True, temperature=1.5, top_k=0,
                             top_p=1.0, num_return_sequences=2, eos_token_id=stops,
                             pad_token_id=tok.pad_token_id, logits_processor=[recorder])
        recorded = recorder.finish(out).tolist()
    width = enc["input_ids"].shape[1]
    for row, lp in enumerate(recorded):
        prompt_ids = [t for t, m in zip(enc["input_ids"][row // 2].tolist(),
                                        enc["attention_mask"][row // 2].tolist()) if m]
        answer = out[row, width:].tolist()
        answer = answer[:_count_until_stop(answer, stops)]
        ids = torch.tensor([prompt_ids + answer])
        with torch.inference_mode():
            logits = model(ids).logits[0, len(prompt_ids) - 1:-1].float()
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(answer)[:, None]).sum()
        assert lp == pytest.approx(expected.item(), abs=2e-3)


def test_sampling_needs_a_positive_temperature(model_and_tokenizer, prompts):
    model, tok = model_and_tokenizer
    with pytest.raises(ValueError, match="temperature must be > 0"):
        generate(model, tok, prompts[:1], num_samples=2, temperature=0.0, progress=False)


def test_missing_adapter_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the train stage first"):
        load_for_inference(tmp_path)
