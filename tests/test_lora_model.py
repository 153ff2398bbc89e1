"""The model to fine-tune: precision from the hardware, tied embeddings, the recorded base."""

from __future__ import annotations

import json

import pytest

from text2sql.params import TrainParams


@pytest.fixture(scope="module")
def tied_model_dir(tmp_path_factory):
    """A tiny Qwen2 whose input and output embeddings are tied (as Qwen2.5-Coder 0.5B-3B)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = tmp_path_factory.mktemp("tied")
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


@pytest.mark.parametrize("backend", ["peft", "unsloth"])
def test_tied_embeddings_get_one_trained_copy_in_float32_on_cpu(tied_model_dir, backend):
    from text2sql.lora_model import load_lora_model, resolve_backend

    assert resolve_backend(backend) == backend
    params = TrainParams(model_name=str(tied_model_dir),
                         lora={"modules_to_save": ["embed_tokens", "lm_head"]})
    loaded = load_lora_model(params, backend, str(tied_model_dir), max_seq_length=64)
    assert loaded.tied_embeddings and loaded.precision == "float32"
    trained = [n for n, p in loaded.model.named_parameters()
               if p.requires_grad and ("embed_tokens" in n or "lm_head" in n)]
    assert len(trained) == 1, trained  # lm_head shares it: the two cannot diverge
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4
               for p in loaded.model.parameters())


def test_trainer_precision_follows_the_hardware():
    from text2sql.lora_model import trainer_precision_flags
    from text2sql.precision import compute_precision

    flags = trainer_precision_flags()
    assert flags == {"bf16": compute_precision() == "bfloat16",
                     "fp16": compute_precision() == "float16"}


def test_adapter_config_names_the_model_the_user_named_not_the_4bit_copy(tmp_path):
    from text2sql.training import loaded_model_name, make_adapter_config_portable

    config = tmp_path / "adapter_config.json"
    loaded = "unsloth/Qwen2.5-Coder-1.5B-Instruct-bnb-4bit"  # what Unsloth loads with load_in_4bit
    config.write_text(json.dumps({"base_model_name_or_path": loaded,
                                  "target_modules": ["v_proj", "q_proj"]}))
    make_adapter_config_portable(config, "unsloth/Qwen2.5-Coder-1.5B-Instruct")
    written = json.loads(config.read_text())
    assert written["base_model_name_or_path"] == "unsloth/Qwen2.5-Coder-1.5B-Instruct"
    assert written["target_modules"] == ["q_proj", "v_proj"]
    params = TrainParams(model_name="unsloth/Qwen2.5-Coder-1.5B-Instruct", load_in_4bit=True)
    assert loaded_model_name(params, loaded) == loaded
    assert loaded_model_name(TrainParams(), "/tmp/xyz/base_model") == "builtin:tiny-qwen2"


def test_training_modules_import_without_torch():
    """The train loop's modules load torch, transformers and Unsloth only when they run."""
    import subprocess
    import sys

    code = ("import sys, text2sql.training, text2sql.presets, text2sql.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'unsloth', 'dvc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_4bit_base_is_prepared_without_float32_copies(checkpointing):
    """Issue 23.8: PEFT's prepare_model_for_kbit_training casts every 16-bit weight that is
    not 4-bit (embeddings, lm_head, norms) to float32, memory Unsloth does not spend; the PEFT
    path freezes them in their own dtype instead (the 4-bit layers themselves need CUDA; the
    rule is the same for every other weight, checked here on a bfloat16 model)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from text2sql.lora_model import prepare_4bit_for_training

    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1)).to(torch.bfloat16)
    before = {n: p.dtype for n, p in model.named_parameters()}
    model = prepare_4bit_for_training(model, checkpointing)
    assert {n: p.dtype for n, p in model.named_parameters()} == before
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters())
    assert model.is_gradient_checkpointing is checkpointing
    if checkpointing:  # inputs carry gradients, so checkpointed frozen layers pass them back
        out = model.get_input_embeddings()(torch.tensor([[1, 2]]))
        assert out.requires_grad
