"""Run in its own process by test_align: build align's GRPO trainer with Unsloth's rewrite of
TRL's GRPOTrainer (the class CUDA runs; importing Unsloth's GPU model stack generates it on
the CPU too, and rebinds ``trl.GRPOTrainer`` for the whole process), score one group's
reference log-probabilities through the trainer, and write what it found as JSON.

    python tests/unsloth_grpo_reference.py ADAPTER ROWS_JSON OUT_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(adapter: Path, rows_file: Path, out_file: Path) -> None:
    from text2sql.modeling.lora import configure_unsloth_environment

    configure_unsloth_environment()
    from text2sql.params import AlignParams
    from text2sql.training import align as alignment
    from text2sql.training.rewards import ExecutionReward

    alignment.import_unsloth()
    import unsloth.models.rl  # noqa: F401  (the GPU stack: rewrites TRL's trainers, as on CUDA)

    found: dict = {}
    add_sft_reference = alignment.add_sft_reference

    def recording(model, adapter_dir):
        found["ref_left_by_trainer"] = alignment.REF_ADAPTER in model.peft_config
        add_sft_reference(model, adapter_dir)

    alignment.add_sft_reference = recording
    params = AlignParams(method="grpo", max_new_tokens=8, samples_per_question=2, batch_size=2,
                         max_steps=1, temperature=1.5)
    model, tokenizer = alignment.load_trainable(adapter)
    trainer = alignment.grpo_trainer(params, model, tokenizer, json.loads(rows_file.read_text()),
                                     ExecutionReward(timeout_s=0.5, max_rows=100, workers=1),
                                     adapter, out_file.parent / "out")
    found["trainer"] = type(trainer).__name__
    # Unsloth's loader gives a model it loaded these switches; align on the CPU loads with
    # transformers, so they are stood in for (no-ops: the CPU has no Unsloth kernels to switch)
    for switch in ("for_training", "for_inference"):
        setattr(trainer.model, switch, lambda *args, **kwargs: None)
    trainer.model.train()
    scored = trainer._generate_and_score_completions([dict(trainer.train_dataset[0])] * 2)
    out_file.write_text(json.dumps({**found, **{k: scored[k].tolist() for k in (
        "prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "ref_per_token_logps")}}))


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]))
