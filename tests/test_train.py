"""The train stage: answer-only loss, the built-in model, checkpoints, kill and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.pipeline_run import copy_source, env, run
from text2sql.training.checkpoints import find_resumable_checkpoint
from text2sql.training.masking import IGNORE_INDEX, tokenize_example, tokenize_rows

PROMPT = [{"role": "system", "content": "You translate questions into SQLite queries."},
          {"role": "user", "content": "Schema:\nCREATE TABLE t (a INT);\n\nQuestion: How many rows?"}]
ANSWER = "SELECT count(*) FROM t"


@pytest.fixture(scope="module")
def builtin_tokenizer():
    from text2sql.modeling.tiny import train_tokenizer

    texts = [m["content"] for m in PROMPT] + [ANSWER] * 5
    return train_tokenizer(texts, vocab_size=400)


def _answer_part(tokenizer, tok):
    return tokenizer.decode([t for t, lab in zip(tok.input_ids, tok.labels) if lab != IGNORE_INDEX])


def test_builtin_tokenizer_loss_covers_only_the_answer_and_end_of_turn(builtin_tokenizer):
    tok = tokenize_example(builtin_tokenizer, PROMPT, ANSWER)
    assert len(tok.input_ids) == len(tok.labels)
    assert _answer_part(builtin_tokenizer, tok) == ANSWER + "<|im_end|>"
    n_prompt = tok.labels.index(next(x for x in tok.labels if x != IGNORE_INDEX))
    assert all(x == IGNORE_INDEX for x in tok.labels[:n_prompt])
    assert all(x != IGNORE_INDEX for x in tok.labels[n_prompt:])
    text = builtin_tokenizer.decode(tok.input_ids[:n_prompt])
    assert text.endswith("<|im_start|>assistant\n") and "How many rows?" in text


def test_qwen_chatml_template_masks_prompt_and_default_system_prompt(builtin_tokenizer):
    import unsloth  # noqa: F401  (must come first)
    from unsloth.chat_templates import CHAT_TEMPLATES, DEFAULT_SYSTEM_MESSAGE

    tokenizer = builtin_tokenizer
    original = tokenizer.chat_template
    # Qwen2.5's real template, as Unsloth ships it (get_chat_template fills the default prompt).
    tokenizer.chat_template = CHAT_TEMPLATES["qwen-2.5"][0].replace(
        "{system_message}", DEFAULT_SYSTEM_MESSAGE["qwen-2.5"])
    try:
        user_only = PROMPT[1:]  # Qwen's template adds its own default system prompt
        tok = tokenize_example(tokenizer, user_only, ANSWER)
        assert _answer_part(tokenizer, tok) == ANSWER + "<|im_end|>"
        prompt_text = tokenizer.decode([t for t, lab in zip(tok.input_ids, tok.labels)
                                        if lab == IGNORE_INDEX])
        assert "You are Qwen" in prompt_text and ANSWER not in prompt_text
    finally:
        tokenizer.chat_template = original


def test_tokenization_survives_save_and_load(builtin_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    builtin_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "SELECT T1.name FROM students AS T1 WHERE T1.year = 2024 AND city = 'Dunmore'"
    assert loaded(text)["input_ids"] == builtin_tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert tokenize_example(loaded, PROMPT, ANSWER) == tokenize_example(builtin_tokenizer, PROMPT, ANSWER)


def test_fully_masked_or_too_long_data_is_an_error(builtin_tokenizer):
    from text2sql.io import DataError

    rows = [{"prompt": PROMPT, "completion": [{"role": "assistant", "content": ANSWER}]}]
    with pytest.raises(DataError, match="max_seq_length"):
        tokenize_rows(builtin_tokenizer, rows, max_seq_length=8)
    empty_template = "{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}{% endif %}{% endfor %}"
    original = builtin_tokenizer.chat_template
    builtin_tokenizer.chat_template = empty_template
    try:
        with pytest.raises(DataError, match="every label is masked"):
            tokenize_rows(builtin_tokenizer, rows, max_seq_length=512)
    finally:
        builtin_tokenizer.chat_template = original


def test_checkpoint_from_other_params_is_not_resumed(tmp_path, capsys):
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (tmp_path / "fingerprint.json").write_text(json.dumps({"params": "a", "data": "d"}))
    assert find_resumable_checkpoint(tmp_path, {"params": "a", "data": "d"}) == tmp_path / "checkpoint-4"
    assert find_resumable_checkpoint(tmp_path, {"params": "b", "data": "d"}) is None
    assert "different params" in capsys.readouterr().out
    assert not (tmp_path / "checkpoint-4").exists()


def test_builtin_model_is_deterministic(tmp_path):
    from text2sql.modeling.tiny import build_tiny_model

    texts = [m["content"] for m in PROMPT] + [ANSWER]
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=2, vocab_size=300, seed=3)
    a = build_tiny_model(texts, tmp_path / "a", **shape)
    b = build_tiny_model(texts, tmp_path / "b", **shape)
    for name in ("model.safetensors", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint_and_finishes(tmp_path):
    (tmp_path / "repo").mkdir()
    repo = copy_source(tmp_path / "repo", {
        "prepare": {"max_train_examples": 160, "max_eval_examples": 8},
        "train": {"epochs": 1.0, "checkpoint_steps": 4, "logging_steps": 2, "save_merged": True},
    })
    run([sys.executable, "stages/prepare.py"], repo)
    proc = subprocess.Popen([sys.executable, "stages/train.py"], cwd=repo, env=env(repo),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    ckpt = repo / "checkpoints/train/checkpoint-8/trainer_state.json"
    while not ckpt.exists():
        assert proc.poll() is None, "training ended before the second checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (repo / "models/adapter").exists()  # nothing half-written in place

    sagemaker = tmp_path / "sm_model"
    out = subprocess.run([sys.executable, "stages/train.py"], cwd=repo, capture_output=True,
                         text=True, env=env(repo, SM_MODEL_DIR=str(sagemaker)), check=True).stdout
    assert "resuming from checkpoints/train/checkpoint-" in out
    metrics = json.loads((repo / "metrics/train.json").read_text())
    runtime = json.loads((repo / "metrics/runtime/train.json").read_text())
    assert metrics["resumed_from_step"] >= 8
    assert metrics["steps"] == 20  # 160 examples / batch 8, as without the kill
    # Throughput counts the tokens this run processed, not the killed run's.
    resumed_share = 1 - metrics["resumed_from_step"] / metrics["steps"]
    processed = runtime["real_tokens_per_s"] * runtime["train_runtime_s"]
    assert processed == pytest.approx(metrics["train_tokens"] * resumed_share, rel=0.3)
    assert metrics["precision"] == "float32" and metrics["batching"] == "padded"
    provenance = json.loads((repo / "models/adapter/provenance.json").read_text())
    assert provenance["model"] == {"base_model": "builtin:tiny-qwen2",
                                   "loaded_model": "builtin:tiny-qwen2",
                                   "load_in_4bit": False, "precision": "float32"}
    assert (repo / "models/adapter/adapter_config.json").is_file()
    assert (repo / "models/adapter/README.md").is_file()
    assert not list((repo / "checkpoints/train").glob("checkpoint-*"))
    assert (sagemaker / "adapter_model.safetensors").is_file()
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(repo / "models/adapter/merged")
    assert merged.dtype.is_floating_point and merged.config.model_type == "qwen2"
    curve = (repo / "metrics/train_live/plots/metrics/loss.tsv").read_text().splitlines()
    col = curve[0].split("\t").index("step")
    steps = [int(line.split("\t")[col]) for line in curve[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 20


@pytest.mark.parametrize("backend", ["unsloth", "peft"])
def test_padding_free_batches_train_as_padded_ones_without_padding(tmp_path, prepared_rows,
                                                                   repo_root, backend):
    """Same examples, same steps: the losses match, only the padding goes."""
    from text2sql.params import load_params
    from text2sql.training.sft import train

    params = load_params("train", repo_root / "params.yaml").model_copy(
        update={"backend": backend, "epochs": 1.0, "logging_steps": 1})
    rows = prepared_rows["train"][:16]
    free = train(params.model_copy(update={"batching": "padding_free"}), rows, tmp_path / "free")
    padded = train(params.model_copy(update={"batching": "padded"}), rows, tmp_path / "padded")
    assert (free["batching"], padded["batching"]) == ("padding_free", "padded")
    assert free["precision"] == padded["precision"] == "float32"
    assert free["steps"] == padded["steps"] == 2
    assert free["train_loss"] == pytest.approx(padded["train_loss"], abs=2e-3)
    assert free["final_loss"] == pytest.approx(padded["final_loss"], abs=2e-3)
    assert free["padding_share"] == 0.0 < padded["padding_share"]
    assert free["train_tokens"] == padded["train_tokens"]


@pytest.mark.cuda
def test_unsloth_qlora_on_cuda(tmp_path, prepared_rows):
    from text2sql.params import load_params
    from text2sql.training.sft import train

    params = load_params("train").model_copy(
        update={"epochs": 0.2, "backend": "unsloth", "load_in_4bit": True})
    metrics = train(params, prepared_rows["train"][:64], tmp_path)
    assert metrics["backend"] == "unsloth" and metrics["device"] == "cuda"


def test_plain_peft_backend_trains_on_cpu(tmp_path, prepared_rows, repo_root):
    """Without Unsloth the same data and labels train with transformers' Trainer on CPU
    (TRL's SFTTrainer needs a GPU kernel for its loss there)."""
    from text2sql.params import load_params
    from text2sql.training.sft import train

    params = load_params("train", repo_root / "params.yaml").model_copy(
        update={"backend": "peft", "epochs": 1.0, "logging_steps": 1})
    metrics = train(params, prepared_rows["train"][:32], tmp_path)
    assert metrics["backend"] == "peft" and metrics["trainer"] == "Trainer"
    assert metrics["steps"] == 4 and metrics["final_loss"] > 0
    assert (tmp_path / "adapter_model.safetensors").is_file()
