"""Inference runs the model that was trained, and decodes only as ``infer:`` says.

The stand-in for a real 4-bit run is local: a tiny Qwen2 model saved twice, as a
16-bit folder and as a ``-bnb-4bit`` folder with other weights, and an adapter whose
config names the ``-bnb-4bit`` one, as Unsloth writes it. Both folders carry a
``generation_config.json`` like Qwen2.5 Instruct's (sampling on, top-k/top-p, a
repetition penalty) plus an n-gram ban, a min-p cut and suppressed tokens, none of
which decoding may inherit.
"""

from __future__ import annotations

import json
import shutil

import pytest

from text2sql.inference.hf import (
    choose_base,
    generate,
    load_for_inference,
    render_prompts,
    stop_token_ids,
    unquantized_name,
)
from text2sql.io import DataError

SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=600)
# Qwen2.5 Instruct's sampling defaults, stronger penalties, and settings a call leaves unset
# (transformers fills those from the model's config): all must stay out of decoding.
BASE_DEFAULTS = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.8,
                     repetition_penalty=1.5, no_repeat_ngram_size=2, min_p=0.2,
                     suppress_tokens=list(range(260, 500)))


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory, prepared_rows):
    """(16-bit folder, -bnb-4bit folder, adapter folder naming the -bnb-4bit one)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from text2sql.modeling.tiny import build_tiny_model
    from text2sql.training.sft import training_texts

    root = tmp_path_factory.mktemp("hub")
    texts = training_texts(prepared_rows["train"][:200])
    full = build_tiny_model(texts, root / "Coder-Tiny-Instruct", seed=1, **SHAPE)
    quantized = build_tiny_model(texts, root / "Coder-Tiny-Instruct-bnb-4bit", seed=2, **SHAPE)
    for folder in (full, quantized):
        config_file = folder / "generation_config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                           **BASE_DEFAULTS}))
    import torch

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(full), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False))  # random A and B: an adapter that changes the output
    adapter = root / "adapter"
    model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(full).save_pretrained(adapter)
    config_file = adapter / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "base_model_name_or_path": str(quantized)}))
    return full, quantized, adapter


@pytest.fixture(scope="module")
def loaded(stand_in):
    return load_for_inference(stand_in[2])


@pytest.fixture(scope="module")
def prompts(prepared_rows):
    rows = prepared_rows["eval"]
    return [rows[0]["prompt"], rows[7]["prompt"], rows[3]["prompt"]]


def test_pre_quantized_names_map_to_their_16_bit_originals():
    assert unquantized_name("unsloth/Qwen2.5-Coder-1.5B-Instruct-bnb-4bit") == \
        "unsloth/Qwen2.5-Coder-1.5B-Instruct"
    assert unquantized_name("unsloth/Qwen2.5-Coder-7B-Instruct-unsloth-bnb-4bit") == \
        "unsloth/Qwen2.5-Coder-7B-Instruct"
    assert unquantized_name("someone/My-Model-BNB-4bit") == "someone/My-Model"
    assert unquantized_name("/models/Coder-Tiny-bnb-4bit") == "/models/Coder-Tiny"
    assert unquantized_name("unsloth/Qwen2.5-Coder-1.5B-Instruct") is None
    assert unquantized_name("builtin:tiny-qwen2") is None


def test_unsloths_table_knows_originals_the_suffix_rule_does_not():
    pytest.importorskip("unsloth", reason="Unsloth's mapper table ships with Unsloth")
    assert unquantized_name("unsloth/Qwen2-70B-bnb-4bit") == "Qwen/Qwen2-70B"


def test_the_16_bit_base_is_loaded_not_the_4_bit_copy(stand_in, loaded, capsys):
    """The adapter names the -bnb-4bit folder; the weights used are the 16-bit folder's."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    full, quantized, adapter = stand_in
    base = choose_base(adapter)
    assert base.path == str(full)
    assert base.metrics() == {"base_model": str(full), "precision": "float32",
                              "load_in_4bit": False, "adapter_merged": True}
    assert "pre-quantized 4-bit copy" in base.note and str(full) in base.note
    load_for_inference(adapter)
    assert "loading its 16-bit original" in capsys.readouterr().err
    model, _ = loaded
    ids = torch.tensor([[5, 17, 99, 3, 250, 42]])
    with torch.inference_mode():
        got = model(ids).logits
        for folder, same in ((full, True), (quantized, False)):
            expected = PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(folder), adapter).eval()(ids).logits
            assert torch.allclose(got, expected, atol=1e-5) is same, folder.name
        plain = AutoModelForCausalLM.from_pretrained(full).eval()(ids).logits
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapter is applied


def test_a_missing_16_bit_original_says_what_to_do(stand_in, tmp_path):
    _, quantized, adapter = stand_in
    orphan = tmp_path / "Other-Model-bnb-4bit"
    shutil.copytree(quantized, orphan)
    copy = tmp_path / "adapter"
    shutil.copytree(adapter, copy)
    config_file = copy / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "base_model_name_or_path": str(orphan)}))
    with pytest.raises(DataError, match=r"16-bit original .*Other-Model' is not there"):
        choose_base(copy)


def test_a_pre_quantized_base_without_the_suffix_is_refused(stand_in, tmp_path):
    _, quantized, adapter = stand_in
    disguised = tmp_path / "Coder-Tiny-Instruct-nf4"
    shutil.copytree(quantized, disguised)
    config = json.loads((disguised / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (disguised / "config.json").write_text(json.dumps(config))
    copy = tmp_path / "adapter"
    shutil.copytree(adapter, copy)
    config_file = copy / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "base_model_name_or_path": str(disguised)}))
    with pytest.raises(DataError, match="pre-quantized checkpoint, not the 16-bit model"):
        choose_base(copy)


def test_4_bit_inference_on_the_cpu_is_refused_clearly(stand_in):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    with pytest.raises(DataError, match="infer.load_in_4bit=true needs a CUDA GPU"):
        choose_base(stand_in[2], load_in_4bit=True)


def _argmax_decode(model, tokenizer, prompt_ids, max_new_tokens):
    """Greedy decoding the slow, obvious way: one full forward pass and argmax per token.

    Returns the new token ids (up to and including a stop token) and the sum of their
    log-probabilities under the model.
    """
    import torch

    stops = stop_token_ids(tokenizer)
    ids, total = list(prompt_ids), 0.0
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
            token = int(logprobs.argmax())
            ids.append(token)
            total += float(logprobs[token])
            if token in stops:
                break
    return ids[len(prompt_ids):], total


@pytest.fixture(scope="module")
def unmerged(stand_in, loaded):
    """The adapter kept beside the 16-bit base, as inference on a GPU runs it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    full, _, adapter = stand_in
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(full), adapter)
    return model.eval(), loaded[1]


@pytest.mark.training
@pytest.mark.parametrize("which", ["loaded", "unmerged"])
def test_greedy_is_the_argmax_of_the_models_logits_and_scores_are_its_own(which, request,
                                                                          prompts):
    model, tok = request.getfixturevalue(which)
    gens = generate(model, tok, prompts, batch_size=3, max_new_tokens=20, score=True,
                    progress=False)
    for prompt, gen in zip(prompts, gens, strict=True):
        prompt_ids = tok(render_prompts(tok, [prompt])[0], add_special_tokens=False)["input_ids"]
        expected_ids, expected_logprob = _argmax_decode(model, tok, prompt_ids, 20)
        assert gen.texts == [tok.decode(expected_ids, skip_special_tokens=True)]
        assert gen.logprobs[0] == pytest.approx(expected_logprob, abs=1e-3)


def test_the_bases_own_defaults_would_have_changed_the_answer(loaded, prompts):
    """Guards the test above: with the stand-in's generation_config.json inherited, greedy
    output is not the argmax (so the equality above is not an accident of the model)."""
    import torch

    model, tok = loaded
    enc = tok(render_prompts(tok, prompts[:1]), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        inherited = model.generate(**enc, do_sample=False, max_new_tokens=20)
    ours = generate(model, tok, prompts[:1], max_new_tokens=20, progress=False)[0].texts[0]
    assert tok.decode(inherited[0, enc["input_ids"].shape[1]:], skip_special_tokens=True) != ours
    assert model.generation_config.repetition_penalty == 1.5  # the model's own, put back


def _sample_decode(model, tokenizer, prompt_ids, n, temperature, max_new_tokens, seed):
    """Sampling the obvious way: softmax of the model's logits at ``temperature``, nothing
    else, drawn as transformers draws (one multinomial over the batch per step).

    Returns each sample's text and the sum of its tokens' untempered log-probabilities.
    """
    import torch

    stops = stop_token_ids(tokenizer)
    torch.manual_seed(seed)
    rows = torch.tensor([list(prompt_ids)] * n)
    alive, totals = torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.float64)
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logits = model(rows).logits[:, -1].float()
            tokens = torch.multinomial(torch.softmax(logits / temperature, -1), 1).squeeze(1)
            tokens = torch.where(alive, tokens, tokenizer.pad_token_id)
            step = torch.log_softmax(logits.double(), -1).gather(1, tokens[:, None]).squeeze(1)
            totals += torch.where(alive, step, 0.0)
            rows = torch.cat([rows, tokens[:, None]], 1)
            alive &= ~torch.isin(tokens, torch.tensor(stops))
            if not alive.any():
                break
    new = rows[:, len(prompt_ids):]
    return tokenizer.batch_decode(new, skip_special_tokens=True), totals.tolist()


def test_sampling_draws_from_the_models_distribution_at_temperature_only(loaded, prompts):
    """The same seed gives the same samples as the obvious sampler: no top-k or top-p cut,
    no penalty inherited; each recorded log-probability is the model's own."""
    model, tok = loaded
    prompt_ids = tok(render_prompts(tok, prompts[:1])[0], add_special_tokens=False)["input_ids"]
    for temperature in (1.0, 0.5):
        gen = generate(model, tok, prompts[:1], batch_size=4, max_new_tokens=12, num_samples=4,
                       temperature=temperature, seed=3, progress=False)[0]
        texts, logprobs = _sample_decode(model, tok, prompt_ids, 4, temperature, 12, seed=3)
        assert gen.texts == texts
        assert gen.logprobs == pytest.approx(logprobs, abs=1e-3)


@pytest.mark.cuda
def test_on_a_gpu_the_adapter_stays_beside_the_16_bit_base(stand_in, prompts):
    """In bf16/fp16 the adapter is not merged (merging would round its delta away)."""
    from peft import PeftModel

    from text2sql.modeling.precision import compute_dtype, compute_precision

    base = choose_base(stand_in[2])
    assert (base.precision, base.adapter_merged) == (compute_precision(), False)
    model, tok = load_for_inference(stand_in[2])
    assert isinstance(model, PeftModel) and model.get_base_model().dtype == compute_dtype()
    assert model.device.type == "cuda"
    gens = generate(model, tok, prompts, batch_size=3, max_new_tokens=8, progress=False)
    assert all(g.new_tokens > 0 for g in gens)


@pytest.mark.cuda
def test_on_a_gpu_4_bit_inference_is_there_on_purpose(stand_in, prompts):
    from peft import PeftModel

    base = choose_base(stand_in[2], load_in_4bit=True)
    assert base.metrics()["load_in_4bit"] is True and base.adapter_merged is False
    model, tok = load_for_inference(stand_in[2], load_in_4bit=True)
    assert isinstance(model, PeftModel) and model.get_base_model().is_loaded_in_4bit
    gens = generate(model, tok, prompts[:2], batch_size=2, max_new_tokens=8, progress=False)
    assert all(g.new_tokens > 0 for g in gens)
