"""Training throughput: padded, grouped and padding-free batches, Unsloth vs PEFT, side by side.

    uv run python bench/bench_train.py                          # CPU: the built-in tiny model
    uv run python bench/bench_train.py --backends unsloth --examples 96 --threads 1  # shared CPU
    uv run python bench/bench_train.py --size small --4bit      # CUDA: a ~0.1B Qwen2 in 4-bit (QLoRA)

Each run trains the same model (made from a config: no hub download) on the same prepared
examples for one epoch, in its own process (Unsloth patches transformers when imported).
Prints, per backend and ``train.batching`` (padded in random order, padded in batches
grouped by length, padding-free), the padding share, tokens/s over all processed positions
and over real tokens only, the real tokens per wall and per CPU second after the first
steps (compilation and warm-up left out; CPU seconds are steadier on a shared machine),
peak memory and the final loss.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {
    "tiny": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=2048),
    "small": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4, vocab_size=4096),
}
WARMUP_SHARE = 0.25  # steps left out of the steady-state figure


def step_timer():
    """A TrainerCallback recording when each optimizer step ends, in wall and CPU seconds."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.cpu_ends: list[float] = []  # this process's CPU time: steadier on a shared CPU

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())

    return StepTimer()


def steady_real_tokens_per_s(ends: list[float], real_tokens: float) -> float:
    """Real tokens/s over the steps after the first ``WARMUP_SHARE`` (tokens shared evenly)."""
    skip = max(1, int(len(ends) * WARMUP_SHARE))
    if len(ends) <= skip:
        return 0.0
    share = (len(ends) - skip) / len(ends)
    return real_tokens * share / (ends[-1] - ends[skip - 1])


def worker(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.backend == "unsloth":
        from text2sql.modeling.lora import configure_unsloth_environment

        configure_unsloth_environment()
        import unsloth  # noqa: F401
    from text2sql.data.prepare import prepare_in_memory
    from text2sql.params import BuiltinModelParams, load_params
    from text2sql.training.sft import train

    rows = prepare_in_memory(load_params("prepare"))["train"][: args.examples]
    params = load_params("train").model_copy(update={
        "backend": args.backend, "epochs": 1.0, "load_in_4bit": args.four_bit,
        "builtin": BuiltinModelParams(**SIZES[args.size]), "gradient_checkpointing": args.gc,
        "batching": args.batching})
    timer = step_timer()
    with tempfile.TemporaryDirectory() as out:
        metrics = train(params, rows, Path(out), callbacks=[timer])
    real_tokens = metrics["train_tokens"]
    metrics["steady_real_tokens_per_s"] = round(steady_real_tokens_per_s(timer.ends, real_tokens), 1)
    metrics["real_tokens_per_cpu_s"] = round(steady_real_tokens_per_s(timer.cpu_ends, real_tokens), 1)
    print("RESULT " + json.dumps(metrics))


def run_one(args: argparse.Namespace, backend: str, batching: str) -> dict:
    cmd = [sys.executable, __file__, "--backend", backend, "--size", args.size,
           "--examples", str(args.examples), "--batching", batching,
           "--threads", str(args.threads)] \
        + (["--4bit"] if args.four_bit else []) + (["--gc"] if args.gc else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        print(f"{backend}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
        sys.exit(1)
    return json.loads(line[-1][7:])


def table(results: dict[tuple[str, str], dict]) -> list[str]:
    lines = ["| backend | batching | padding share | tokens/s | real tokens/s | "
             "real tokens/s after warm-up | real tokens per CPU s after warm-up | "
             "peak memory (MiB) | train s | final loss |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (backend, batching), r in results.items():
        lines.append(
            f"| {backend} | {batching} | {r['padding_share']:.3f} | "
            f"{r['tokens_per_s']:.0f} | {r['real_tokens_per_s']:.0f} | "
            f"{r['steady_real_tokens_per_s']:.0f} | {r['real_tokens_per_cpu_s']:.0f} | "
            f"{r['peak_memory_mb']:.0f} | "
            f"{r['train_runtime_s']:.1f} | {r['final_loss']:.3f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--examples", type=int, default=400, help="training examples (1 epoch)")
    ap.add_argument("--backends", default="unsloth,peft", help="comma-separated (default: both)")
    ap.add_argument("--4bit", dest="four_bit", action="store_true", help="QLoRA (CUDA only)")
    ap.add_argument("--gc", action="store_true", help="gradient checkpointing")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default); 1 makes CPU seconds exact on a "
                         "shared machine, where waiting threads spin")
    ap.add_argument("--backend", choices=["unsloth", "peft"], help=argparse.SUPPRESS)
    ap.add_argument("--batching", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.backend:
        worker(args)
        return
    from text2sql.training.batching import BATCHINGS

    results = {(backend, batching): run_one(args, backend, batching)
               for backend in args.backends.split(",") for batching in BATCHINGS}
    first = next(iter(results.values()))
    print(f"\nmodel: built-in {args.size}, {args.examples} examples, 1 epoch, device "
          f"{first['device']} ({first['precision']}, threads {args.threads or 'default'}), "
          f"4-bit {args.four_bit}\n")
    print("\n".join(table(results)))
    for backend in args.backends.split(","):
        padded, free = results[backend, "padded"], results[backend, "padding_free"]
        grouped = results[backend, "grouped"]
        print(f"\n{backend}: real tokens per CPU s, against padded: grouped "
              f"{grouped['real_tokens_per_cpu_s'] / padded['real_tokens_per_cpu_s']:.2f}x, "
              f"padding-free {free['real_tokens_per_cpu_s'] / padded['real_tokens_per_cpu_s']:.2f}x")
    if {"unsloth", "peft"} <= set(args.backends.split(",")):
        u, p = results["unsloth", "padding_free"], results["peft", "padding_free"]
        print(f"Unsloth / PEFT (padding-free) real tokens/s: "
              f"{u['real_tokens_per_s'] / p['real_tokens_per_s']:.2f}x; "
              f"peak memory: {u['peak_memory_mb'] / p['peak_memory_mb']:.2f}x")


if __name__ == "__main__":
    main()
