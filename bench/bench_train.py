"""Training throughput: Unsloth vs plain PEFT, side by side in one run.

    uv run python bench/bench_train.py                 # CPU: the built-in tiny model
    uv run python bench/bench_train.py --size small --4bit   # CUDA: a ~0.1B Qwen2 in 4-bit (QLoRA)

Each backend trains the same model (made from a config: no hub download) on the same
prepared examples for the same number of steps, in its own process (Unsloth patches
transformers when imported). Prints tokens/s, peak memory and the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = {
    "tiny": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=2048),
    "small": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4, vocab_size=4096),
}


def worker(args: argparse.Namespace) -> None:
    if args.backend == "unsloth":
        import unsloth  # noqa: F401
    from text2sql.params import BuiltinModelParams, load_params
    from text2sql.prepare import prepare_in_memory
    from text2sql.training import train

    rows = prepare_in_memory(load_params("prepare"))["train"][: args.examples]
    params = load_params("train").model_copy(update={
        "backend": args.backend, "epochs": 1.0, "load_in_4bit": args.four_bit,
        "builtin": BuiltinModelParams(**SIZES[args.size]), "gradient_checkpointing": args.gc})
    with tempfile.TemporaryDirectory() as out:
        metrics = train(params, rows, Path(out))
    print("RESULT " + json.dumps(metrics))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--examples", type=int, default=400, help="training examples (1 epoch)")
    ap.add_argument("--4bit", dest="four_bit", action="store_true", help="QLoRA (CUDA only)")
    ap.add_argument("--gc", action="store_true", help="gradient checkpointing")
    ap.add_argument("--backend", choices=["unsloth", "peft"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.backend:
        worker(args)
        return
    results = {}
    for backend in ("unsloth", "peft"):
        cmd = [sys.executable, __file__, "--backend", backend, "--size", args.size,
               "--examples", str(args.examples)] + (["--4bit"] if args.four_bit else []) \
            + (["--gc"] if args.gc else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"{backend}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            sys.exit(1)
        results[backend] = json.loads(line[-1][7:])
    u, p = results["unsloth"], results["peft"]
    print(f"\nmodel: built-in {args.size}, {args.examples} examples, 1 epoch, "
          f"device {u['device']}, 4-bit {args.four_bit}\n")
    print("| backend | tokens/s | peak memory (MiB) | train s | final loss |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['tokens_per_s']:.0f} | {r['peak_memory_mb']:.0f} | "
              f"{r['train_runtime_s']:.1f} | {r['final_loss']:.3f} |")
    print(f"\nUnsloth / PEFT throughput: {u['tokens_per_s'] / p['tokens_per_s']:.2f}x; "
          f"peak memory: {u['peak_memory_mb'] / p['peak_memory_mb']:.2f}x")


if __name__ == "__main__":
    main()
