"""The training curve (loss, learning rate, gradient norm per logged step) with DVCLive.

Points are logged against the trainer's global step, so a resumed run's curve continues
where the killed one stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CURVE_KEYS = ("loss", "learning_rate", "grad_norm")


def live_callback(live_dir: Path, resume_step: int | None, keys: Sequence[str] = CURVE_KEYS):
    """DVCLive's transformers callback, writing only the curves of ``keys`` under ``live_dir``.

    Hyperparameters and summaries are not written (they are in params.yaml and
    metrics/train.json). A key's ``/`` becomes ``_`` in the file name (TRL logs
    ``rewards/margins``): one flat folder of curves.
    """
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    class StepAlignedDVCLive(DVCLiveCallback):
        def setup(self, args, state, model):
            self._initialized = True

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            for key in keys:
                if logs and key in logs:
                    self.live.step = state.global_step
                    self.live.log_metric(key.replace("/", "_"), float(logs[key]))

        def on_train_end(self, args, state, control, **kwargs):
            pass

    if resume_step is not None:
        trim_curve(live_dir, resume_step)
    live = Live(dir=str(live_dir), resume=resume_step is not None, save_dvc_exp=False,
                dvcyaml=None, report=None)
    return StepAlignedDVCLive(live=live)


def trim_curve(live_dir: Path, last_step: int) -> None:
    """Drop the curve's points after ``last_step`` (logged after the checkpoint resumed from)."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header, rows = lines[0], lines[1:]
        col = header.split("\t").index("step")
        kept = [r for r in rows if int(r.split("\t")[col]) <= last_step]
        tsv.write_text("\n".join([header, *kept]) + "\n")
