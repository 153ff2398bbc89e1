"""The align stage: the execution reward, DPO pairs, a short real DPO and GRPO run, kill and
resume, method none."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import pytest

from text2sql.io import DataError
from text2sql.params import AlignParams, parse_section
from text2sql.training.pairs import build_pairs, check_pairs
from text2sql.training.rewards import ExecutionReward, Reward

GOLD = "SELECT name FROM item WHERE price > 2990"


@pytest.fixture()
def reward() -> ExecutionReward:
    return ExecutionReward(timeout_s=0.5, max_rows=1000, workers=1)


@pytest.mark.parametrize("sql, outcome, match, valid", [
    ("SELECT name FROM item WHERE price >= 2990.5", "correct", 1.0, 1.0),
    ("SELECT name FROM item WHERE price > 2900", "wrong_result", 0.0, 1.0),
    ("SELECT count(*) FROM item a, item b, item c", "timeout", 0.0, 0.0),
    ("DELETE FROM item", "not_read_only", 0.0, 0.0),
    ("SELECT name FROM item; DROP TABLE item", "not_read_only", 0.0, 0.0),
    ("the name of the item", "parse_error", 0.0, 0.0),
    ("", "empty_prediction", 0.0, 0.0),
])
def test_execution_reward(shop, reward, sql, outcome, match, valid):
    [r] = reward.score([(str(shop), GOLD, sql)])
    assert (r.outcome, r.execution_match, r.valid) == (outcome, match, valid)
    assert shop.stat().st_size > 0 and reward.score([(str(shop), GOLD, GOLD)])[0].execution_match


def test_execution_reward_caches_and_extracts(shop, reward):
    raw = f"```sql\n{GOLD}\n```"
    rewards = reward.score_raw([str(shop)] * 3, [GOLD] * 3, [raw, raw, "SELECT 1"])
    assert [r.execution_match for r in rewards] == [1.0, 1.0, 0.0]
    assert reward.executed == 2
    reward.score_raw([str(shop)], [GOLD], [raw])
    assert reward.executed == 2


def _row(i: int) -> dict:
    return {"id": str(i), "prompt": [{"role": "user", "content": f"q{i}"}],
            "completion": [{"role": "assistant", "content": f"GOLD{i}"}]}


OK, WRONG, BROKEN = Reward("correct", True), Reward("wrong_result", True), Reward("parse_error", False)


def test_build_pairs():
    rows = [_row(0), _row(1), _row(2)]
    samples = [["A", "B", "A ", "C"], ["X", "Y"], ["P", "P"]]
    rewards = [[OK, WRONG, OK, BROKEN], [WRONG, WRONG], [OK, OK]]
    pairs, stats = build_pairs(rows, samples, rewards, max_pairs_per_question=2)
    chosen_rejected = [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs]
    # q0: the correct answer against each distinct wrong one; q1: gold, none correct; q2: no pair
    assert chosen_rejected == [("A", "B"), ("A", "C"), ("GOLD1", "X"), ("GOLD1", "Y")]
    assert pairs[0]["prompt"] == rows[0]["prompt"]
    m = stats.metrics()
    assert (m["questions_sampled"], m["pairs"], m["pairs_with_gold_chosen"]) == (3, 4, 2)
    assert (m["share_with_correct"], m["share_with_correct_and_wrong"]) == (0.6667, 0.3333)
    assert build_pairs(rows, samples, rewards, max_pairs_per_question=1)[1].pairs == 2


def test_no_pair_says_why():
    _, stats = build_pairs([_row(0)], [["A", "A"]], [[OK, OK]])
    with pytest.raises(DataError, match="every one of the 2 candidates.*raise align.temperature"):
        check_pairs(stats)


def test_align_params():
    assert parse_section(AlignParams, None, "align").method == "none"
    with pytest.raises(DataError, match="align.method"):
        parse_section(AlignParams, {"method": "ppo"}, "align")
    with pytest.raises(DataError, match="multiple of align.samples_per_question"):
        parse_section(AlignParams, {"method": "grpo", "batch_size": 6, "samples_per_question": 4},
                      "align")
    with pytest.raises(DataError, match="align.checkpoint_steps"):
        parse_section(AlignParams, {"checkpoint_steps": 0}, "align")
    with pytest.raises(DataError, match="unknown key 'align.reward_weights.exec'"):
        parse_section(AlignParams, {"reward_weights": {"exec": 1.0}}, "align")


def _in_repo(rows: list[dict], repo_root: Path) -> list[dict]:
    """Prepared rows name their databases relative to the repository root: make them absolute."""
    return [{**r, "db_path": str(repo_root / r["db_path"])} for r in rows]


SHORT = dict(max_questions=4, samples_per_question=2, max_new_tokens=24, max_steps=1,
             batch_size=2, logging_steps=1, temperature=1.5)


def _check_adapter(out: Path, sft: Path) -> None:
    assert (out / "adapter_config.json").is_file() and (out / "base_model").is_dir()
    assert not (out / "ref").exists() and not (out / ".trainer").exists()
    assert (json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
            == "builtin:tiny-qwen2")
    assert not filecmp.cmp(out / "adapter_model.safetensors", sft / "adapter_model.safetensors",
                           shallow=False)


def kill_after_checkpoint():
    """A callback that stops training right after the first checkpoint is written, as a kill
    there would: the checkpoint folder stays as it is and nothing after it runs (no adapter,
    no clean-up). An exception, not a signal: a tiny model's steps are too quick to kill
    a process between two checkpoints reliably (train's test kills a real process)."""
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt(f"killed after checkpoint-{state.global_step}")

    return Kill()


def test_dpo_trains_and_resumes_after_a_kill(tiny_adapter, prepared_rows, repo_root, tmp_path,
                                             capsys):
    """A real DPO run of 4 steps; the same run killed after its checkpoint at step 2 and run
    again resumes there, reads its pairs instead of sampling, and saves the same bytes."""
    from text2sql.training.align import PAIRS_FILE, select_questions, train_dpo

    params = AlignParams(method="dpo", **{**SHORT, "max_steps": 4, "batch_size": 1,
                                          "checkpoint_steps": 2})
    rows = select_questions(_in_repo(prepared_rows["train"], repo_root), params, "train")
    whole = train_dpo(params, rows, tiny_adapter, tmp_path / "whole",
                      checkpoint_dir=tmp_path / "ck_whole", live_dir=tmp_path / "live",
                      progress=False)
    assert whole["questions_sampled"] == 4 and whole["pairs"] >= 4 and whole["steps"] == 4
    assert whole["final_loss"] is not None and whole["reward_accuracy"] is not None
    assert (tmp_path / "live" / "plots" / "metrics" / "rewards_margins.tsv").is_file()
    _check_adapter(tmp_path / "whole", tiny_adapter)
    assert [p.name for p in (tmp_path / "ck_whole").iterdir()] == ["fingerprint.json"]

    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt, match="checkpoint-2"):
        train_dpo(params, rows, tiny_adapter, tmp_path / "killed", checkpoint_dir=ck,
                  progress=False, callbacks=[kill_after_checkpoint()])
    assert (ck / "checkpoint-2" / "trainer_state.json").is_file() and (ck / PAIRS_FILE).is_file()
    assert not (tmp_path / "killed" / "adapter_model.safetensors").exists()
    capsys.readouterr()

    resumed = train_dpo(params, rows, tiny_adapter, tmp_path / "resumed", checkpoint_dir=ck,
                        progress=False)
    out = capsys.readouterr().out
    assert f"align: resuming from {ck / 'checkpoint-2'}" in out and "not sampled again" in out
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 4
    # what the pairs held, and where training ended, as without the kill (train_loss is the
    # mean over the steps this run took, as transformers reports it)
    assert ({k: v for k, v in resumed.items() if k not in ("train_loss", "resumed_from_step")
             and not k.endswith("_s")}
            == {k: v for k, v in whole.items() if k not in ("train_loss", "resumed_from_step")
                and not k.endswith("_s")})
    _assert_same_weights(tmp_path / "whole" / "adapter_model.safetensors",
                         tmp_path / "resumed" / "adapter_model.safetensors")
    assert [p.name for p in ck.iterdir()] == ["fingerprint.json"]


def _assert_same_weights(a: Path, b: Path) -> None:
    """The same bytes on the CPU (pinned numerics); on a GPU, whose kernels need not be
    bit-reproducible, the same tensors up to rounding."""
    from text2sql.modeling.lora import has_cuda

    if not has_cuda():
        assert filecmp.cmp(a, b, shallow=False)
        return
    import torch
    from safetensors.torch import load_file

    left, right = load_file(a), load_file(b)
    assert left.keys() == right.keys()
    for name in left:
        assert torch.allclose(left[name], right[name], atol=1e-4), name


def test_checkpoints_of_another_run_are_discarded(shop, tmp_path, capsys):
    """Other params, or another SFT adapter, make what a killed run left unusable: its
    checkpoints and its cached pairs go, with a message, and nothing is resumed."""
    from text2sql.training.align import PAIRS_FILE, run_inputs
    from text2sql.training.checkpoints import prepare_checkpoints, read_cached, write_cached

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    rows = [{"id": "0", "db_path": str(shop), "query": GOLD}]
    params, ck = AlignParams(method="dpo"), tmp_path / "ck"

    def killed_run() -> None:
        assert prepare_checkpoints(ck, params, rows, inputs=run_inputs(adapter, rows),
                                   stage="align") is None
        write_cached(ck, PAIRS_FILE, {"pairs": []})
        (ck / "checkpoint-3").mkdir()
        (ck / "checkpoint-3" / "trainer_state.json").write_text("{}")

    killed_run()
    assert prepare_checkpoints(ck, params, rows, inputs=run_inputs(adapter, rows),
                               stage="align") == ck / "checkpoint-3"
    assert read_cached(ck, PAIRS_FILE) == {"pairs": []}
    capsys.readouterr()
    assert prepare_checkpoints(ck, params.model_copy(update={"beta": 0.5}), rows,
                               inputs=run_inputs(adapter, rows), stage="align") is None
    assert "align: not resuming" in capsys.readouterr().out
    assert sorted(p.name for p in ck.iterdir()) == ["fingerprint.json"]

    killed_run()
    (adapter / "adapter_model.safetensors").write_bytes(b"other weights")
    assert prepare_checkpoints(ck, params, rows, inputs=run_inputs(adapter, rows),
                               stage="align") is None
    assert "made with different adapter;" in capsys.readouterr().out
    assert read_cached(ck, PAIRS_FILE) is None and not (ck / "checkpoint-3").exists()


def test_grpo_trains_a_step(tiny_adapter, prepared_rows, repo_root, tmp_path, capsys):
    """A real GRPO step (sampling, execution rewards, loss, update). The briefly trained toy
    writes no valid SQL, so every group's rewards are equal: the run stops with the reason
    and writes no adapter (the measured run in README shows GRPO learning). Its checkpoint
    stays, and the run started again resumes from it (its step is the last: nothing to do)."""
    from text2sql.training.align import select_questions, train_grpo

    params = AlignParams(method="grpo", **{**SHORT, "checkpoint_steps": 1})
    rows = select_questions(_in_repo(prepared_rows["train"], repo_root), params, "train")
    ck = tmp_path / "ck"
    with pytest.raises(DataError, match="no reward signal.*raise align.temperature"):
        train_grpo(params, rows, tiny_adapter, tmp_path / "out", checkpoint_dir=ck,
                   live_dir=tmp_path / "live", progress=False)
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
    assert (tmp_path / "live" / "plots" / "metrics" / "reward.tsv").is_file()
    assert (ck / "checkpoint-1" / "trainer_state.json").is_file()
    capsys.readouterr()
    with pytest.raises(DataError, match="no reward signal"):
        train_grpo(params, rows, tiny_adapter, tmp_path / "out", checkpoint_dir=ck,
                   progress=False)
    assert f"align: resuming from {ck / 'checkpoint-1'}" in capsys.readouterr().out


def test_reward_signal():
    from text2sql.training.align import check_reward_signal

    check_reward_signal([{"frac_reward_zero_std": 1.0}, {"frac_reward_zero_std": 0.5}], 4)
    with pytest.raises(DataError, match="every group of 4 completions"):
        check_reward_signal([{"frac_reward_zero_std": 1.0}, {"loss": 0.0}], 4)


@pytest.mark.cuda
def test_grpo_with_unsloth_on_cuda(tiny_adapter, prepared_rows, repo_root, tmp_path):
    """On CUDA the model is loaded with Unsloth (its GRPO path): one step runs."""
    from text2sql.training.align import select_questions, train_grpo

    params = AlignParams(method="grpo", **SHORT)
    rows = select_questions(_in_repo(prepared_rows["train"], repo_root), params, "train")
    try:
        metrics = train_grpo(params, rows, tiny_adapter, tmp_path / "out", progress=False)
    except DataError as e:  # the toy may still write no valid SQL: the step ran all the same
        assert "no reward signal" in str(e)
    else:
        assert metrics["backend"] == "unsloth" and metrics["steps"] == 1


def _stage(repo_root: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("align_stage", repo_root / "stages/align.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def test_method_none_passes_the_adapter_through(tiny_adapter, repo_root, tmp_path, monkeypatch):
    stage = _stage(repo_root)
    shutil.copytree(tiny_adapter, tmp_path / "models" / "adapter")
    (tmp_path / "checkpoints" / "align" / "checkpoint-5").mkdir(parents=True)  # a DPO run's
    monkeypatch.chdir(tmp_path)
    stage.main(AlignParams())
    assert not any(Path("checkpoints/align").iterdir())  # the out exists, empty
    match, mismatch, errors = filecmp.cmpfiles(
        "models/adapter", "models/aligned",
        [p.relative_to(tiny_adapter).as_posix() for p in tiny_adapter.rglob("*") if p.is_file()],
        shallow=False)
    assert not mismatch and not errors and match
    assert json.loads(Path("metrics/align.json").read_text()) == {"method": "none"}
    assert Path("metrics/align_live/plots/metrics/loss.tsv").read_text() == "step\tloss\n"


def test_align_needs_the_sft_adapter(repo_root, tmp_path, monkeypatch):
    stage = _stage(repo_root)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="run the train stage first"):
        stage.main(AlignParams())
    assert not Path("models/aligned").exists()
