"""One precision rule for every stage, decided from the GPU's compute capability.

No GPU here: torch.cuda's device queries are replaced by a fake GPU of a chosen capability
(the one place the real thing cannot exist), and ``is_bf16_supported`` raises, so a caller
that still consulted it would fail.
"""

from __future__ import annotations

import json

import pytest

from text2sql.modeling.precision import compute_precision, cuda_capability, precision_for


@pytest.fixture
def fake_gpus(monkeypatch):
    """``fake_gpus(*capabilities)``: torch sees these CUDA GPUs, device 0 current."""
    import torch

    def install(*capabilities: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
        monkeypatch.setattr(torch.cuda, "get_device_capability",
                            lambda device=None: capabilities[0 if device is None else device])

        def emulation_answer(*args, **kwargs):
            raise AssertionError("the precision rule consulted torch.cuda.is_bf16_supported()")

        monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulation_answer)
        monkeypatch.delenv("WORLD_SIZE", raising=False)

    return install


@pytest.mark.parametrize(("capability", "expected"), [
    ((7, 5), "float16"),   # T4: torch's is_bf16_supported() says True (emulation)
    ((7, 0), "float16"),   # V100
    ((8, 0), "bfloat16"),  # A100
    ((8, 6), "bfloat16"),  # A10, RTX 3090
    ((9, 0), "bfloat16"),  # H100
])
def test_precision_follows_the_compute_capability(fake_gpus, capability, expected):
    fake_gpus(capability)
    assert cuda_capability() == capability
    assert compute_precision() == expected


def test_no_gpu_is_float32():
    assert precision_for(None) == "float32"


def test_a_distributed_run_takes_the_weakest_gpu_as_unsloth_does(fake_gpus, monkeypatch):
    fake_gpus((8, 0), (7, 5))
    assert compute_precision() == "bfloat16"  # one process: the current device
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert compute_precision() == "float16"  # every rank must pick the same


def test_train_and_infer_pick_the_same_precision_on_a_t4(fake_gpus, tmp_path):
    """The trainer's mixed precision and the inference base come from the one rule."""
    from text2sql.inference.hf import choose_base
    from text2sql.modeling.lora import trainer_precision_flags

    fake_gpus((7, 5))
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "Qwen/Qwen2.5-Coder-1.5B-Instruct"}))
    assert trainer_precision_flags() == {"bf16": False, "fp16": True}
    base = choose_base(tmp_path)
    assert (base.precision, base.adapter_merged) == ("float16", False)


def test_no_module_asks_torch_whether_bf16_is_supported(repo_root):
    """A second rule would drift from this one (it did: train fp16, infer bf16 on a T4)."""
    users = [p.relative_to(repo_root).as_posix()
             for folder in ("src", "stages", "bench") for p in (repo_root / folder).rglob("*.py")
             if "is_bf16_supported" in p.read_text(encoding="utf-8")]
    assert users == ["src/text2sql/modeling/precision.py"]  # named in its docstring, never called
