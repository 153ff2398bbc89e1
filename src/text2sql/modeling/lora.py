"""The model to fine-tune: backend choice, compute precision, LoRA adapters, tokenizer.

Unsloth (``FastLanguageModel``) or plain PEFT load the base model in the precision the
hardware computes in (:mod:`text2sql.modeling.precision`: float32 on the CPU, also with Unsloth,
which would pick bfloat16 on a CPU with bf16 instructions) and attach LoRA adapters.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text2sql.io import DataError
from text2sql.modeling.tiny import CHATML_TEMPLATE
from text2sql.params import TrainParams

UNSLOTH_CACHE_DIR = Path(".cache/unsloth")  # ignored by git and DVC (.gitignore, .dvcignore)
UNSLOTH_TEMPORARY_DIR = UNSLOTH_CACHE_DIR / "temporary_saved_buffers"


def configure_unsloth_environment() -> None:
    """Settings Unsloth reads once, when it is imported: call before ``import unsloth``.

    - ``UNSLOTH_CPU_BF16=0``: Unsloth's CPU backend computes in bfloat16 wherever the
      processor has bf16 instructions (``unsloth_zoo.cpu.runtime.cpu_bf16_supported``);
      the CPU rule here is float32, so results do not depend on the instruction set.
    - ``UNSLOTH_COMPILE_LOCATION``: its generated modules go to ``.cache/unsloth/compiled``
      (ignored), not to ``unsloth_compiled_cache/`` in the working directory. A location
      the user set is kept.
    - Custom-op aliasing is a warning, as torch has it by default, even where ``CI`` is set.
      Unsloth compiles with Inductor's ``memory_planning`` (unsloth_zoo
      temporary_patches/common.py, ``get_torch_compile_options``), whose generated code takes
      its buffers from a pool through ``torch.ops.inductor._alloc_from_pool`` (a view of the
      pool, by design). On a compiled function's first call, AOTAutograd checks that no
      custom op returns an alias of its input (torch/_functorch/_aot_autograd/
      runtime_wrappers.py, ``_AnalyzeCustomOpInputOutputMode``) and raises instead of
      warning when ``error_on_custom_op_aliasing`` is on, whose default is
      ``bool(os.getenv("CI"))`` (torch/_functorch/config.py): a CI runner, GitHub Actions
      among them, then dies on torch's own op. ``TORCHINDUCTOR_ERROR_ON_CUSTOM_OP_ALIASING``,
      when the user set it, still decides.
    """
    os.environ["UNSLOTH_CPU_BF16"] = "0"
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str((UNSLOTH_CACHE_DIR / "compiled").resolve()))
    if "TORCHINDUCTOR_ERROR_ON_CUSTOM_OP_ALIASING" not in os.environ:
        os.environ["TORCHINDUCTOR_ERROR_ON_CUSTOM_OP_ALIASING"] = "0"  # read when torch imports
        functorch_config = sys.modules.get("torch._functorch.config")
        if functorch_config is not None:  # torch came first: its setting was read already
            functorch_config.error_on_custom_op_aliasing = False


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(requested: str) -> str:
    """``unsloth`` or ``peft``: what ``train.backend`` asks for, or what imports (auto)."""
    if requested == "peft":
        return "peft"
    configure_unsloth_environment()
    try:
        import unsloth  # noqa: F401  (Unsloth must be imported before transformers/trl/peft)
    except Exception as e:  # ImportError, or its own RuntimeError without a supported device
        if requested == "unsloth":
            raise RuntimeError(f"train.backend=unsloth, but Unsloth does not import: {e}") from e
        return "peft"
    return "unsloth"


def load_tokenizer(model_path: str) -> Any:
    """The base model's tokenizer, with a ChatML template and a pad token when it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return complete_tokenizer(tokenizer)


def complete_tokenizer(tokenizer: Any) -> Any:
    if getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass
class LoadedModel:
    """A base model with LoRA adapters, what it was loaded from, and in which precision."""

    model: Any
    loaded_model: str  # the checkpoint actually read (Unsloth may swap in its -bnb-4bit copy)
    precision: str  # bfloat16 | float16 | float32: what the layers compute in
    tied_embeddings: bool


def load_lora_model(params: TrainParams, backend: str, model_path: str,
                    max_seq_length: int) -> LoadedModel:
    """The base model (4-bit with ``train.load_in_4bit``) with LoRA adapters attached.

    On a model whose input and output embeddings are tied, ``modules_to_save`` copies of
    both stay tied (PEFT's ``ensure_weight_tying``), so the saved embeddings cannot diverge.
    """
    from text2sql.modeling.precision import compute_dtype, compute_precision

    lora = params.lora
    cuda = has_cuda()
    if params.load_in_4bit and not cuda:
        raise DataError("train.load_in_4bit=true needs a CUDA GPU (bitsandbytes); "
                        "set it to false to train on the CPU")
    dtype = compute_dtype()
    modules_to_save = list(lora.modules_to_save) or None
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        gradient_checkpointing = "unsloth" if params.gradient_checkpointing else False
        model, _ = FastLanguageModel.from_pretrained(
            model_name=model_path,
            max_seq_length=max_seq_length,
            load_in_4bit=params.load_in_4bit,
            dtype=dtype,
            use_gradient_checkpointing=gradient_checkpointing,
        )
        _check_dtype(model, params, backend)
        tied = _has_tied_embeddings(model)
        model = FastLanguageModel.get_peft_model(
            model,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            modules_to_save=modules_to_save,
            bias="none",
            use_gradient_checkpointing=gradient_checkpointing,
            random_state=params.seed,
            temporary_location=str(UNSLOTH_TEMPORARY_DIR),
            **({"ensure_weight_tying": True} if tied and modules_to_save else {}),
        )
    else:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        from text2sql.modeling.precision import nf4_config

        kwargs: dict[str, Any] = {}
        if params.load_in_4bit:
            kwargs["quantization_config"] = nf4_config(dtype)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, **kwargs)
        _check_dtype(model, params, backend)
        tied = _has_tied_embeddings(model)
        if params.load_in_4bit:
            model = prepare_4bit_for_training(model, params.gradient_checkpointing)
        model = get_peft_model(model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules), modules_to_save=modules_to_save,
            ensure_weight_tying=bool(tied and modules_to_save), task_type="CAUSAL_LM"))
        if compute_precision() == "float16":  # fp16 mixed precision needs fp32 trained weights
            for param in model.parameters():
                if param.requires_grad:
                    param.data = param.data.float()
    return LoadedModel(model=model, loaded_model=_loaded_name(model, model_path),
                       precision=compute_precision(), tied_embeddings=tied)


def prepare_4bit_for_training(model: Any, gradient_checkpointing: bool) -> Any:
    """A 4-bit base made ready for LoRA training: every weight frozen, and (when asked)
    gradient checkpointing with inputs that carry gradients.

    What PEFT's ``prepare_model_for_kbit_training`` does, less its cast of every 16-bit
    weight that is not 4-bit (embeddings, lm_head, norms) to float32
    (peft/utils/other.py ~193-209, peft 0.21.2): for Qwen2.5-Coder-1.5B that doubles the
    233M-parameter embedding table to 0.9 GB, memory Unsloth does not spend (it keeps them in
    16 bit), so a PEFT run would be compared with Unsloth on unequal terms. Under bf16 or
    fp16 mixed precision the trained LoRA weights are float32 anyway (see
    :func:`load_lora_model`); the frozen ones need no float32 copy.
    """
    for param in model.parameters():
        param.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def _check_dtype(model: Any, params: TrainParams, backend: str) -> None:
    """Fail when the base model's weights are not in the precision this machine computes in."""
    from text2sql.modeling.precision import compute_dtype, compute_precision

    found = model.get_input_embeddings().weight.dtype
    if not params.load_in_4bit and found != compute_dtype():
        raise RuntimeError(f"train: {backend} loaded the model in {found}, not in "
                           f"{compute_precision()} as this machine computes")


def _has_tied_embeddings(model: Any) -> bool:
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return bool(getattr(text_config, "tie_word_embeddings", False))


def _loaded_name(model: Any, model_path: str) -> str:
    """The checkpoint the weights came from (PEFT records it; Unsloth may have renamed it)."""
    config = getattr(model, "peft_config", {}).get("default")
    return getattr(config, "base_model_name_or_path", None) or model_path


PER_EXAMPLE_SDPA = "sdpa (one call per example)"


def unsloth_packed_attention() -> str:
    """The kernel Unsloth runs padding-free batches with on this GPU (its private dispatch).

    FlashAttention, xformers or torch's varlen kernel (torch 2.12+) take a whole flattened
    batch in one call; without any of them Unsloth calls SDPA once per example per layer,
    which leaves a fast GPU waiting on Python (``unsloth.utils.attention_dispatch``).
    ``unknown`` where that module has moved.
    """
    try:
        from unsloth.utils import attention_dispatch as dispatch

        backend = dispatch.select_attention_backend(use_varlen=True)
        if backend != dispatch.SDPA:
            return str(backend)
        varlen = getattr(dispatch, "_TORCH_VARLEN_ATTN", None) is not None
    except (ImportError, AttributeError):
        return "unknown"
    import torch

    if varlen and torch_varlen_takes(tuple(torch.cuda.get_device_capability()),
                                     torch.are_deterministic_algorithms_enabled()):
        return "sdpa (torch varlen)"
    return PER_EXAMPLE_SDPA


def torch_varlen_takes(capability: tuple[int, int], deterministic: bool) -> bool:
    """Whether Unsloth would run torch's varlen kernel on a GPU of ``capability``.

    Its own gate, ``_torch_varlen_takes`` (``unsloth/utils/attention_dispatch.py:581-611``),
    refuses it below compute capability 8.0 and whenever torch's deterministic algorithms
    are on (``return not torch.are_deterministic_algorithms_enabled()``); its other
    conditions (fp16/bf16, head size at most 256) hold for the models trained here.
    """
    return capability[0] >= 8 and not deterministic


def trainer_precision_flags() -> dict[str, bool]:
    """TrainingArguments' ``bf16`` / ``fp16``: mixed precision as :func:`compute_precision` says."""
    from text2sql.modeling.precision import compute_precision

    precision = compute_precision()
    return {"bf16": precision == "bfloat16", "fp16": precision == "float16"}
