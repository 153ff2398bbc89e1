"""Aligning the fine-tuned adapter with execution feedback: DPO on sampled pairs, or GRPO.

Both continue training the SFT adapter (``models/adapter``) and keep a frozen copy of it
as the reference, a second adapter named ``ref`` (:func:`add_sft_reference`), so beta / the
KL term measure the distance from the SFT model, not from the base. The base is loaded as
training loaded it (the same name, 4-bit when the adapter was trained in 4-bit).

- DPO: sample ``samples_per_question`` answers per training question with the infer
  stage's sampling (:func:`text2sql.inference.hf.generate`), score them with the execution
  reward (:mod:`text2sql.training.rewards`), build pairs (:mod:`text2sql.training.pairs`) and run
  TRL's ``DPOTrainer``.
- GRPO: TRL's ``GRPOTrainer`` samples groups of completions itself and is rewarded by
  ``execution_match`` and ``valid_sql`` (weights in ``align.reward_weights``), or with
  ``align.reward: arctic`` by Arctic-Text2SQL-R1's graded reward alone. On CUDA the
  model is loaded with Unsloth, its LoRA kernels installed (it also rewrites TRL's trainer);
  on the CPU the same code runs on plain transformers + PEFT.

The result is saved in the adapter folder layout that ``infer`` loads (``base_model/`` of
the built-in model included). With a ``checkpoint_dir`` both write a checkpoint every
``align.checkpoint_steps`` steps and resume a killed run (:mod:`text2sql.training.checkpoints`, as
train does); DPO also keeps its sampled pairs there, so a resumed run does not sample again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from text2sql.io import DataError
from text2sql.modeling.tiny import BASE_MODEL_DIR
from text2sql.params import AlignParams
from text2sql.training.checkpoints import (
    checkpoint_step,
    prepare_checkpoints,
    read_cached,
    remove_checkpoints,
    write_cached,
)
from text2sql.training.pairs import PairStats, build_pairs, check_pairs
from text2sql.training.rewards import ExecutionReward

DPO_CURVE = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
TRAINER_DIR = ".trainer"  # inside the output folder while training; removed before saving
GRPO_CURVE = ("loss", "reward", "rewards/execution_match/mean", "rewards/valid_sql/mean",
              "rewards/graded/mean", "kl")  # graded: align.reward arctic only
PAIRS_FILE = "dpo_pairs.json"  # in the checkpoint folder: the sampled pairs, for a resumed run
REF_ADAPTER = "ref"  # the frozen SFT copy, under the name TRL's trainers score the reference with


def pass_through(adapter_dir: Path, out_dir: Path) -> None:
    """``align.method: none``: the SFT adapter, file for file."""
    shutil.copytree(adapter_dir, out_dir, dirs_exist_ok=True)


def select_questions(rows: Sequence[dict[str, Any]], params: AlignParams, source: str
                     ) -> list[dict[str, Any]]:
    """The training rows aligned on (the first ``max_questions``); each needs its database."""
    chosen = list(rows[:params.max_questions] if params.max_questions else rows)
    if not chosen:
        raise DataError(f"{source}: no training examples; run the prepare stage first")
    for row in chosen:
        db = row.get("db_path")
        if not db or not Path(db).is_file():
            raise DataError(f"{source}: example {row.get('id')!r}: db_path {db!r} is not a SQLite "
                            "file; align rewards queries by executing them, so it needs the "
                            "databases (a source with databases, run from the repository root)")
    return chosen


def import_unsloth() -> bool:
    """Import Unsloth before TRL; True when the model is to be loaded with it (CUDA).

    TRL's DPO and GRPO trainers compute log-probabilities with a Triton kernel that needs a
    GPU; Unsloth, once imported, serves that slot with its own kernel, which also runs on
    the CPU. So Unsloth is imported everywhere, and loads the model only on CUDA.
    """
    from text2sql.modeling.lora import has_cuda, resolve_backend

    try:
        backend = resolve_backend("unsloth")
    except RuntimeError as e:
        if has_cuda():
            return False  # TRL's own kernel runs on the GPU
        raise DataError(f"align on the CPU needs Unsloth (TRL's DPO/GRPO log-probability kernel "
                        f"is Triton, GPU only): {e}") from e
    return backend == "unsloth" and has_cuda()


@dataclasses.dataclass(frozen=True)
class AlignBase:
    """The base model align loads under the SFT adapter, and how."""

    path: str  # what the loader reads: the name training gave its loader, or base_model/
    load_in_4bit: bool  # as the SFT adapter was trained (on CUDA; the CPU has no 4-bit)
    precision: str  # bfloat16 | float16 | float32: what the model computes in
    note: str = ""  # why it is not loaded as the adapter was trained, if it is not


def trained_in_4bit(adapter_dir: Path) -> bool:
    """Whether the SFT adapter was trained on a 4-bit base: ``model.load_in_4bit`` in the
    ``provenance.json`` the train stage writes beside it (False for an adapter without one)."""
    from text2sql.runtime.provenance import PROVENANCE_FILE

    record_file = adapter_dir / PROVENANCE_FILE
    if not record_file.is_file():
        return False
    return bool(json.loads(record_file.read_text()).get("model", {}).get("load_in_4bit", False))


def choose_align_base(adapter_dir: Path, *, cuda: bool) -> AlignBase:
    """The base to continue training the SFT adapter on: as training loaded it.

    On CUDA the name is the one training gave its loader (``train.model_name``, which
    ``adapter_config.json`` records), 4-bit when the adapter was trained in 4-bit: Unsloth
    resolves that pair to the checkpoint training read (``unsloth/...-bnb-4bit`` for 4-bit), so
    no second copy is downloaded and the adapter trains on the weights it was fitted to. On the
    CPU (no bitsandbytes 4-bit) it is the 16-bit base inference loads, in float32, as before.
    """
    from text2sql.inference.hf import choose_base

    base = choose_base(adapter_dir)
    in_4bit = trained_in_4bit(adapter_dir)
    if not cuda:
        note = (f"{adapter_dir} was trained on a 4-bit base; 4-bit needs CUDA, so align trains "
                f"it on the 16-bit {base.path!r} in {base.precision}") if in_4bit else ""
        return AlignBase(path=base.path, load_in_4bit=False, precision=base.precision, note=note)
    named = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    local = (adapter_dir / BASE_MODEL_DIR).is_dir()  # the built-in model: read from there
    return AlignBase(path=base.path if local else named, load_in_4bit=in_4bit,
                     precision=base.precision)


def load_trainable(adapter_dir: Path, *, unsloth: bool = False,
                   gradient_checkpointing: bool = False) -> tuple[Any, Any]:
    """The base model (:func:`choose_align_base`) with the SFT adapter loaded trainable, and
    the adapter's tokenizer.

    With Unsloth the adapter is attached as Unsloth's own loader attaches a saved one,
    ``PeftModel.from_pretrained`` then ``patch_peft_model`` (unsloth/models/loader.py:2082-2102),
    which installs its fused LoRA kernels and its gradient checkpointing (off unless asked for).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from text2sql.modeling.lora import complete_tokenizer, has_cuda

    base = choose_align_base(adapter_dir, cuda=has_cuda())
    if base.note:
        print(f"align: {base.note}", file=sys.stderr)
    dtype = getattr(torch, base.precision)
    tokenizer = complete_tokenizer(AutoTokenizer.from_pretrained(adapter_dir))
    if unsloth:
        from unsloth import FastLanguageModel

        checkpointing = "unsloth" if gradient_checkpointing else False  # as train passes it
        model, _ = FastLanguageModel.from_pretrained(
            model_name=base.path, dtype=dtype, load_in_4bit=base.load_in_4bit,
            use_gradient_checkpointing=checkpointing)
        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
        return FastLanguageModel.patch_peft_model(model, checkpointing), tokenizer
    kwargs: dict[str, Any] = {}
    if base.load_in_4bit:  # as the PEFT training path quantizes (lora_model.load_lora_model)
        from text2sql.modeling.precision import nf4_config

        kwargs["quantization_config"] = nf4_config(dtype)
    model = AutoModelForCausalLM.from_pretrained(
        base.path, dtype=dtype, device_map="cuda" if base.precision != "float32" else None,
        **kwargs)
    if base.load_in_4bit:  # as training prepares it: no float32 copies of the 16-bit weights
        from text2sql.modeling.lora import prepare_4bit_for_training

        model = prepare_4bit_for_training(model, gradient_checkpointing)
    model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    return model, tokenizer


def add_sft_reference(model: Any, adapter_dir: Path) -> None:
    """Give the built trainer's model the frozen SFT copy ``ref`` where the trainer did not.

    For a PEFT model TRL scores the reference with the adapter ``ref`` when there is one, else
    with the adapters disabled, i.e. the base model (trl/trainer/grpo_trainer.py:2648-2653).
    TRL's trainer adds ``ref`` itself (grpo_trainer.py:455-482), but Unsloth's rewrite of it
    deletes that block on purpose, wanting the base as reference (unsloth/models/rl.py:3779-3792,
    reason at :4118): then beta would pull toward the un-fine-tuned model. Loaded from
    ``adapter_dir`` after the trainer is built, the reference is the SFT adapter whichever
    class the trainer is; the check runs at every step, the optimizer is made in ``train()``.
    """
    if REF_ADAPTER not in model.peft_config:
        model.load_adapter(str(adapter_dir), adapter_name=REF_ADAPTER, is_trainable=False)


def save_aligned(model: Any, tokenizer: Any, adapter_dir: Path, out_dir: Path) -> None:
    """The trained ``default`` adapter in ``adapter_dir``'s layout (not TRL's ``ref`` copy)."""
    shutil.rmtree(out_dir / TRAINER_DIR, ignore_errors=True)  # the trainer's own scratch files
    model.save_pretrained(out_dir, selected_adapters=["default"])
    tokenizer.save_pretrained(out_dir)
    sft_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    from text2sql.training.sft import make_adapter_config_portable

    make_adapter_config_portable(out_dir / "adapter_config.json",
                                 sft_config["base_model_name_or_path"])
    if (adapter_dir / BASE_MODEL_DIR).is_dir():
        shutil.copytree(adapter_dir / BASE_MODEL_DIR, out_dir / BASE_MODEL_DIR)


def run_inputs(adapter_dir: Path, rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """What determines an align run besides its params and rows, for the checkpoints'
    fingerprint: the SFT adapter's files and the databases the rewards run on."""
    from text2sql.runtime.provenance import data_hash

    databases = hashlib.sha256()
    for db in sorted({r["db_path"] for r in rows}):
        databases.update(f"{db}\t{data_hash(db)['md5']}\n".encode())
    return {"adapter": data_hash(adapter_dir)["md5"], "databases": databases.hexdigest()}


def _resume_point(params: AlignParams, rows: Sequence[dict[str, Any]], adapter_dir: Path,
                  checkpoint_dir: Path | None) -> Path | None:
    if checkpoint_dir is None:
        return None
    return prepare_checkpoints(checkpoint_dir, params, rows, stage="align",
                               inputs=run_inputs(adapter_dir, rows))


def _common_args(params: AlignParams, out_dir: Path, checkpoint_dir: Path | None
                 ) -> dict[str, Any]:
    from text2sql.modeling.lora import has_cuda, trainer_precision_flags

    return dict(output_dir=str(checkpoint_dir or out_dir / TRAINER_DIR),
                learning_rate=params.learning_rate,
                num_train_epochs=params.epochs, max_steps=params.max_steps or -1,
                per_device_train_batch_size=params.batch_size, lr_scheduler_type="constant",
                seed=params.seed, data_seed=params.seed, logging_steps=params.logging_steps,
                save_strategy="steps" if checkpoint_dir else "no",
                save_steps=params.checkpoint_steps, save_total_limit=2, report_to="none",
                use_cpu=not has_cuda(), disable_tqdm=False, beta=params.beta,
                # TRL's configs default to True (trl/trainer/grpo_config.py:409, dpo_config.py:147)
                gradient_checkpointing=params.gradient_checkpointing,
                **trainer_precision_flags())


def _callbacks(callbacks: Sequence[Any], live_dir: Path | None, resume_from: Path | None,
               curve: Sequence[str]) -> list[Any]:
    """``callbacks`` and, with ``live_dir``, the DVCLive curve (continued after a resume)."""
    if live_dir is None:
        return list(callbacks)
    from text2sql.training.curves import live_callback

    return [*callbacks,
            live_callback(live_dir, checkpoint_step(resume_from) if resume_from else None, curve)]


def _train(trainer: Any, resume_from: Path | None) -> Any:
    """``trainer.train()``, from ``resume_from`` when given.

    The checkpoint holds two adapters: the trained ``default`` in its top folder, TRL's
    frozen ``ref`` copy in ``ref/``. transformers, seeing an adapter subfolder, reloads only
    the subfolders, so the trained weights are put back here (in place: the optimizer's
    state refers to these tensors).
    """
    if resume_from is None:
        return trainer.train()
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    set_peft_model_state_dict(trainer.model, load_peft_weights(str(resume_from)),
                              adapter_name="default")
    return trainer.train(resume_from_checkpoint=str(resume_from))


def _training_metrics(trainer: Any, result: Any, reward: ExecutionReward,
                      resume_from: Path | None) -> dict[str, Any]:
    """What DPO and GRPO runs both report."""
    history = trainer.state.log_history
    return {"candidates_executed": reward.executed,
            "steps": trainer.state.global_step,
            "resumed_from_step": checkpoint_step(resume_from) if resume_from else 0,
            # the last logged loss; the run's mean when it ended before logging_steps
            "final_loss": _last(history, "loss") or round(float(result.training_loss), 4),
            "train_loss": round(float(result.training_loss), 4)}


def sample_and_score(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]],
                     params: AlignParams, reward: ExecutionReward, *, progress: bool = True
                     ) -> tuple[list[list[str]], list[list[Any]]]:
    """``samples_per_question`` raw answers per row (the infer stage's sampling), and their
    rewards."""
    from text2sql.inference.hf import generate

    n = params.samples_per_question
    gens = generate(model, tokenizer, [r["prompt"] for r in rows], batch_size=params.batch_size * n,
                    max_new_tokens=params.max_new_tokens, num_samples=n,
                    temperature=params.temperature, seed=params.seed, score=False,
                    progress=progress)
    samples = [g.texts for g in gens]
    flat = reward.score_raw([r["db_path"] for r in rows for _ in range(n)],
                            [r["query"] for r in rows for _ in range(n)],
                            [t for texts in samples for t in texts])
    return samples, [flat[i * n:(i + 1) * n] for i in range(len(rows))]


def _start(params: AlignParams, adapter_dir: Path) -> tuple[bool, Any, Any, ExecutionReward]:
    """Unsloth imported first (see :func:`import_unsloth`), seeds set, the SFT adapter loaded
    trainable, and the run's execution reward (one cache for the whole run)."""
    unsloth = import_unsloth()
    from transformers import set_seed

    set_seed(params.seed)
    model, tokenizer = load_trainable(adapter_dir, unsloth=unsloth,
                                      gradient_checkpointing=params.gradient_checkpointing)
    return unsloth, model, tokenizer, ExecutionReward(timeout_s=params.timeout_s,
                                                      max_rows=params.max_rows)


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    values = [h[key] for h in history if key in h]
    return round(float(values[-1]), 4) if values else None


def sample_pairs(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], params: AlignParams,
                 reward: ExecutionReward, checkpoint_dir: Path | None, *, progress: bool = True
                 ) -> tuple[list[dict[str, Any]], PairStats]:
    """DPO's pairs: sampled, executed and paired, or read back from ``checkpoint_dir`` where
    an earlier run of the same fingerprint kept them (sampling is the slow part)."""
    cached = read_cached(checkpoint_dir, PAIRS_FILE) if checkpoint_dir else None
    if cached is not None:
        reward.executed = cached["candidates_executed"]
        print(f"align: {len(cached['pairs'])} DPO pairs read from {checkpoint_dir / PAIRS_FILE}, "
              "not sampled again")
        return cached["pairs"], PairStats(**cached["stats"])
    samples, rewards = sample_and_score(model, tokenizer, rows, params, reward, progress=progress)
    pairs, stats = build_pairs(rows, samples, rewards,
                               max_pairs_per_question=params.max_pairs_per_question)
    check_pairs(stats)
    if checkpoint_dir:
        write_cached(checkpoint_dir, PAIRS_FILE, {"pairs": pairs, "stats": dataclasses.asdict(stats),
                                                  "candidates_executed": reward.executed})
    return pairs, stats


def train_dpo(params: AlignParams, rows: Sequence[dict[str, Any]], adapter_dir: Path,
              out_dir: Path, *, checkpoint_dir: Path | None = None, live_dir: Path | None = None,
              progress: bool = True, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Sample, execute, pair, and train the SFT adapter with DPO; save it to ``out_dir``.

    With ``checkpoint_dir``, checkpoints (and the pairs) go there and a killed run with the
    same fingerprint resumes; the folder is emptied when the adapter is saved. ``callbacks``:
    more transformers ``TrainerCallback`` objects.
    """
    start = time.perf_counter()
    resume_from = _resume_point(params, rows, adapter_dir, checkpoint_dir)
    _, model, tokenizer, reward = _start(params, adapter_dir)
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    t0 = time.perf_counter()
    pairs, stats = sample_pairs(model, tokenizer, rows, params, reward, checkpoint_dir,
                                progress=progress)
    sample_s = time.perf_counter() - t0
    config = DPOConfig(**_common_args(params, out_dir, checkpoint_dir), max_length=None)
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(pairs),
                         processing_class=tokenizer,
                         callbacks=_callbacks(callbacks, live_dir, resume_from, DPO_CURVE))
    add_sft_reference(trainer.model, adapter_dir)
    result = _train(trainer, resume_from)
    save_aligned(model, tokenizer, adapter_dir, out_dir)
    if checkpoint_dir:
        remove_checkpoints(checkpoint_dir)
    history = trainer.state.log_history
    return {"method": "dpo", **stats.metrics(),
            **_training_metrics(trainer, result, reward, resume_from),
            "reward_accuracy": _last(history, "rewards/accuracies"),
            "reward_margin": _last(history, "rewards/margins"),
            "sample_s": round(sample_s, 2),
            "train_runtime_s": round(result.metrics["train_runtime"], 2),
            "wall_s": round(time.perf_counter() - start, 2)}


def reward_functions(reward: ExecutionReward, kind: str = "binary") -> list[Any]:
    """GRPO's reward functions, ``execution_match`` and ``valid_sql`` (and with ``kind``
    ``arctic`` a third, ``graded``), sharing one cache.

    TRL calls each with the completions and the dataset's columns (``db_path``, ``query``);
    a conversational completion is a list with one assistant message.
    """
    def texts(completions: Sequence[Any]) -> list[str]:
        return [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]

    def execution_match(completions: Sequence[Any], db_path: Sequence[str],
                        query: Sequence[str], **_: Any) -> list[float]:
        return [r.execution_match for r in reward.score_raw(db_path, query, texts(completions))]

    def valid_sql(completions: Sequence[Any], db_path: Sequence[str], query: Sequence[str],
                  **_: Any) -> list[float]:
        return [r.valid for r in reward.score_raw(db_path, query, texts(completions))]

    def graded(completions: Sequence[Any], db_path: Sequence[str], query: Sequence[str],
               **_: Any) -> list[float]:
        return [r.graded for r in reward.score_raw(db_path, query, texts(completions))]

    return [execution_match, valid_sql] + ([graded] if kind == "arctic" else [])


def reward_weights(params: AlignParams) -> list[float]:
    """The weight of each of :func:`reward_functions`: ``align.reward_weights`` for the binary
    reward; for ``arctic`` the graded reward alone, the other two kept at weight 0 so their
    curves are still logged."""
    if params.reward == "arctic":
        return [0.0, 0.0, 1.0]
    return [params.reward_weights.execution_match, params.reward_weights.valid_sql]


def check_reward_signal(history: Sequence[dict[str, Any]], group_size: int) -> None:
    """Fail when every group of completions got equal rewards: GRPO's advantages were all 0,
    so the adapter did not change, and saving it would pass off the SFT adapter as aligned."""
    shares = [h["frac_reward_zero_std"] for h in history if "frac_reward_zero_std" in h]
    if shares and min(shares) >= 1.0:
        raise DataError(
            f"align: GRPO had no reward signal: in every group of {group_size} completions all "
            "got the same reward (typically all wrong), so nothing was learned; raise "
            "align.temperature or align.samples_per_question, or start from a better-trained "
            "adapter (train.epochs)")


def grpo_trainer(params: AlignParams, model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]],
                 reward: ExecutionReward, adapter_dir: Path, out_dir: Path, *,
                 checkpoint_dir: Path | None = None, callbacks: Sequence[Any] = ()) -> Any:
    """TRL's ``GRPOTrainer`` (Unsloth's rewrite of it on CUDA) for the loaded SFT adapter, its
    KL reference the SFT adapter (:func:`add_sft_reference`; none with ``beta`` 0)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    dataset = Dataset.from_list([{"prompt": list(r["prompt"]), "db_path": r["db_path"],
                                  "query": r["query"]} for r in rows])
    config = GRPOConfig(**_common_args(params, out_dir, checkpoint_dir),
                        num_generations=params.samples_per_question,
                        max_completion_length=params.max_new_tokens,
                        temperature=params.temperature, top_k=0, top_p=1.0,
                        reward_weights=reward_weights(params),
                        shuffle_dataset=True)
    trainer = GRPOTrainer(model=model, args=config, train_dataset=dataset,
                          processing_class=tokenizer,
                          reward_funcs=reward_functions(reward, params.reward),
                          callbacks=list(callbacks))
    if params.beta != 0.0:
        add_sft_reference(trainer.model, adapter_dir)
    return trainer


def train_grpo(params: AlignParams, rows: Sequence[dict[str, Any]], adapter_dir: Path,
               out_dir: Path, *, checkpoint_dir: Path | None = None,
               live_dir: Path | None = None, progress: bool = True,
               callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train the SFT adapter with GRPO on the execution reward; save it to ``out_dir``.

    ``checkpoint_dir``: as for :func:`train_dpo` (no pairs: GRPO samples as it trains).
    """
    start = time.perf_counter()
    resume_from = _resume_point(params, rows, adapter_dir, checkpoint_dir)
    unsloth, model, tokenizer, reward = _start(params, adapter_dir)
    trainer = grpo_trainer(params, model, tokenizer, rows, reward, adapter_dir, out_dir,
                           checkpoint_dir=checkpoint_dir,
                           callbacks=_callbacks(callbacks, live_dir, resume_from, GRPO_CURVE))
    result = _train(trainer, resume_from)
    history = trainer.state.log_history
    check_reward_signal(history, params.samples_per_question)
    save_aligned(model, tokenizer, adapter_dir, out_dir)
    if checkpoint_dir:
        remove_checkpoints(checkpoint_dir)
    return {"method": "grpo", "backend": "unsloth" if unsloth else "peft",
            "questions": len(rows),
            **_training_metrics(trainer, result, reward, resume_from),
            "final_reward": _last(history, "reward"),
            "final_execution_match": _last(history, "rewards/execution_match/mean"),
            "final_valid_sql": _last(history, "rewards/valid_sql/mean"),
            **({"final_graded": _last(history, "rewards/graded/mean")}
               if params.reward == "arctic" else {}),
            "train_runtime_s": round(result.metrics["train_runtime"], 2),
            "wall_s": round(time.perf_counter() - start, 2)}
