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
    from text2sql.modeling.lora import load_lora_model, resolve_backend

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
    from text2sql.modeling.lora import trainer_precision_flags
    from text2sql.modeling.precision import compute_precision

    flags = trainer_precision_flags()
    assert flags == {"bf16": compute_precision() == "bfloat16",
                     "fp16": compute_precision() == "float16"}


def test_adapter_config_names_the_model_the_user_named_not_the_4bit_copy(tmp_path):
    from text2sql.training.sft import loaded_model_name, make_adapter_config_portable

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

    code = ("import sys, text2sql.training.sft, text2sql.presets, text2sql.cli; "
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

    from text2sql.modeling.lora import prepare_4bit_for_training

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


@pytest.fixture
def unsloth_dispatch(monkeypatch):
    """Unsloth's real attention dispatch, seen from a faked CUDA GPU of capability 8.0.

    No GPU here: torch.cuda's device queries are replaced (the one part that cannot be
    real). The dispatch is: no FlashAttention or xformers on this machine, and torch's
    varlen kernel built, so only Unsloth's gate on that kernel decides.
    """
    import torch

    from text2sql.modeling.lora import resolve_backend

    assert resolve_backend("unsloth") == "unsloth"
    import unsloth.models  # noqa: F401  (on the CPU `import unsloth` leaves it for later; the dispatch needs it)
    from unsloth.utils import attention_dispatch as dispatch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert dispatch.select_attention_backend(use_varlen=True) == dispatch.SDPA
    assert dispatch._TORCH_VARLEN_ATTN is not None
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(False)
    yield dispatch
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@pytest.mark.slow
def test_the_packed_attention_probe_sees_deterministic_mode(unsloth_dispatch):
    import torch

    from text2sql.modeling.lora import PER_EXAMPLE_SDPA, unsloth_packed_attention

    assert unsloth_packed_attention() == "sdpa (torch varlen)"
    torch.use_deterministic_algorithms(True, warn_only=True)
    assert unsloth_packed_attention() == PER_EXAMPLE_SDPA


def test_the_packed_attention_probe_sees_a_pre_ampere_gpu(unsloth_dispatch, monkeypatch):
    import torch

    from text2sql.modeling.lora import PER_EXAMPLE_SDPA, unsloth_packed_attention

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert unsloth_packed_attention() == PER_EXAMPLE_SDPA


def test_auto_batching_pads_where_unsloth_would_refuse_varlen(unsloth_dispatch, monkeypatch,
                                                                capsys):
    import torch

    import text2sql.training.sft
    from text2sql.training.sft import choose_batching

    monkeypatch.setattr(text2sql.training.sft, "has_cuda", lambda: True)
    params = TrainParams(batching="auto")
    assert choose_batching(params, "unsloth") == "padding_free"
    torch.use_deterministic_algorithms(True, warn_only=True)
    assert choose_batching(params, "unsloth") == "padded"
    assert "deterministic algorithms off); using padded batches" in capsys.readouterr().out
    assert choose_batching(TrainParams(batching="padding_free"), "unsloth") == "padding_free"


def test_unsloths_varlen_gate_is_the_one_the_probe_mirrors(unsloth_dispatch):
    """The probe copies a private gate; a new Unsloth that changes it fails here."""
    import inspect

    gate = inspect.getsource(unsloth_dispatch._torch_varlen_takes)
    assert "return not torch.are_deterministic_algorithms_enabled()" in gate
    assert "torch.cuda.get_device_capability(Q.device)[0] < 8" in gate


@pytest.mark.parametrize("torch_first", [True, False])
@pytest.mark.parametrize("user_setting", [None, "1"])
def test_a_ci_runner_keeps_torchs_custom_op_aliasing_check_a_warning(torch_first, user_setting):
    """With CI set, torch makes its first-call custom-op aliasing check an error, which its own
    ``inductor::_alloc_from_pool`` (Unsloth's memory-planned kernels) fails: the Unsloth settings
    keep it the warning it is elsewhere, whether torch was imported before or after, and leave
    a value the user set alone."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_ERROR_ON_CUSTOM_OP_ALIASING"}
    env["CI"] = "true"
    if user_setting is not None:
        env["TORCHINDUCTOR_ERROR_ON_CUSTOM_OP_ALIASING"] = user_setting
    code = ("import torch._functorch.config\n" if torch_first else "") + (
        "from text2sql.modeling.lora import configure_unsloth_environment\n"
        "configure_unsloth_environment()\n"
        "import torch._functorch.config as c\n"
        "print(c.error_on_custom_op_aliasing)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ("True" if user_setting == "1" else "False")
