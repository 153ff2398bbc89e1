"""Presets for real models: each validates, and applying one is one command on params.yaml."""

from __future__ import annotations

import shutil

import pytest
import yaml

from text2sql.cli import main
from text2sql.io import DataError
from text2sql.params import TrainParams, load_params
from text2sql.presets import GPU_MEMORY_GB, apply_preset, preset_names, preset_train_values
from text2sql.training.memory import (
    DESIGN_EXAMPLE_TOKENS,
    QWEN_CODER_SHAPES,
    activation_bytes_per_token_layer,
    fits,
    step_memory_bytes,
)

PRESETS = ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "qwen2.5-coder-3b", "qwen2.5-coder-7b"]


def test_the_four_qwen_coder_presets_are_there(repo_root):
    assert preset_names(repo_root / "presets") == PRESETS


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("gpu_memory", GPU_MEMORY_GB)
def test_each_preset_validates_with_what_its_users_pick(repo_root, tmp_path, name, gpu_memory):
    params_file = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", params_file)
    params = apply_preset(name, gpu_memory, params_file, repo_root / "presets")
    assert params == load_params("train", params_file)
    assert params.model_name.startswith("Qwen/Qwen2.5-Coder-") and params.load_in_4bit
    assert params.lora.modules_to_save == [] and params.max_seq_length is None
    assert set(params.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                               "gate_proj", "up_proj", "down_proj"}
    assert params.learning_rate == pytest.approx(2.0e-4)
    assert params.batch_size * params.gradient_accumulation_steps == 16
    other = {k: v for k, v in yaml.safe_load(params_file.read_text()).items() if k != "train"}
    assert other == {k: v for k, v in yaml.safe_load((repo_root / "params.yaml").read_text()).items()
                     if k != "train"}


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("gpu_memory", GPU_MEMORY_GB)
def test_gradient_checkpointing_is_on_only_where_the_micro_batch_needs_it(repo_root, name,
                                                                          gpu_memory):
    """A padded micro-batch of the longest examples fits, and checkpointing (a second forward
    pass per step) is on only where that micro-batch would not fit without it."""
    params = TrainParams(**preset_train_values(name, gpu_memory, repo_root / "presets"))
    shape = QWEN_CODER_SHAPES[params.model_name]
    tokens = params.batch_size * DESIGN_EXAMPLE_TOKENS
    assert fits(shape, params.lora.r, tokens, gpu_memory, params.gradient_checkpointing)
    assert params.gradient_checkpointing == (
        not fits(shape, params.lora.r, tokens, gpu_memory, checkpointing=False))


def test_the_estimate_counts_what_checkpointing_saves():
    """Per token and layer, 1.5B: (6 x 1536 + 2 x 256 + 2 x 8960) 16-bit values and 14 float32."""
    shape = QWEN_CODER_SHAPES["Qwen/Qwen2.5-Coder-1.5B-Instruct"]
    assert activation_bytes_per_token_layer(shape) == 2 * 27648 + 4 * 14
    without, with_ = (step_memory_bytes(shape, 16, 8 * 2048, c) for c in (False, True))
    saved = 8 * 2048 * (27 * activation_bytes_per_token_layer(shape) - 2 * 1536 * 28)
    assert without - with_ == pytest.approx(saved)
    assert not fits(shape, 16, 8 * 2048, 24, checkpointing=False)  # the old 24 GB preset
    assert fits(shape, 16, 4 * 2048, 24, checkpointing=False)


def test_preset_command_writes_params_as_dvc_does_keeping_comments(repo_root, tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", params_file)
    assert main(["preset", "qwen2.5-coder-7b", "--gpu-memory", "80", "--params", str(params_file),
                 "--presets-dir", str(repo_root / "presets")]) == 0
    assert "Qwen/Qwen2.5-Coder-7B-Instruct" in capsys.readouterr().out
    text = params_file.read_text()
    assert "# Parameters of the stages; each stage reads only its own section." in text
    assert "max_seq_length:           # longer examples" in text  # null as `dvc exp run -S` writes it
    params = load_params("train", params_file)
    assert (params.batch_size, params.gradient_accumulation_steps) == (4, 4)


def test_unknown_preset_or_invalid_values_write_nothing(repo_root, tmp_path):
    params_file = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", params_file)
    before = params_file.read_text()
    with pytest.raises(DataError, match="no such preset"):
        apply_preset("qwen9-huge", 24, params_file, repo_root / "presets")
    (tmp_path / "bad.yaml").write_text("train:\n  learning_rate: -1.0\ngpu_memory:\n  24: {}\n")
    with pytest.raises(DataError, match="train.learning_rate"):
        apply_preset("bad", 24, params_file, tmp_path)
    assert params_file.read_text() == before
    with pytest.raises(DataError, match="no settings for 80 GB"):
        preset_train_values("bad", 80, tmp_path)
