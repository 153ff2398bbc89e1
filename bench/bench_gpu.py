"""The GPU check, in one short run on a CUDA machine with no network (at most ~8 minutes).

    uv run python bench/bench_gpu.py                    # everything below
    uv run python bench/bench_gpu.py --shapes 1.5b --skip-tests --budget-s 240

1. The CUDA tests that need no pipeline run (``pytest -m "cuda and not slow"``).
2. QLoRA training throughput, Unsloth vs plain PEFT, at the layer shapes of
   Qwen2.5-Coder-1.5B-Instruct and -7B-Instruct with their real vocabularies (151,936 and
   152,064 rows), random weights made from a config on the GPU (no download), 4-bit base,
   ``train.batching`` (``--batching``, default auto: padding-free), the sample data's prompts. The 7B shape keeps fewer layers
   (``--layers-7b``) so that its checkpoint is written and quantized in seconds; tokens/s
   scale with the layer count. Printed per run: tokens/s, real tokens/s, real tokens/s
   after warm-up (compilation left out), peak memory; then Unsloth/PEFT ratios against
   the goal (>= 1.5x tokens/s at the 1.5B shape, <= 0.5x memory, >= 40k real tokens/s).
3. Batched generation throughput (``bench/bench_infer.py``) with the 1.5B-shape adapter.

Each run does what ``dvc exp run`` does: the train stage's numerics setup first
(:func:`text2sql.runtime.reproducibility.pin_cpu_numerics`, which leaves deterministic algorithms off
on CUDA), then :func:`text2sql.training.sft.train` with ``train.batching`` decided as the stage
decides it. The PEFT baseline is the pipeline's own PEFT backend, whose 4-bit base keeps its
16-bit embeddings and lm_head in 16 bit as Unsloth does (``lora_model.prepare_4bit_for_training``;
PEFT's ``prepare_model_for_kbit_training`` would cast them to float32). Each training run is
its own process (Unsloth patches transformers when imported), killed when it would pass
``--budget-s`` (a hard limit, not only a check before it starts); a run that was not
started or was killed says so in the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

# Qwen2.5-Coder config.json values (hub, 2024-11); layers can be cut with --layers-*.
SHAPES = {
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                 tie_word_embeddings=True, rope_theta=1000000.0, max_position_embeddings=32768),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
               tie_word_embeddings=False, rope_theta=1000000.0, max_position_embeddings=32768),
}
GOAL_SPEEDUP, GOAL_MEMORY, GOAL_REAL_TOKENS_PER_S = 1.5, 0.5, 40_000
BATCH_SIZE = 16


def shape_config(shape: str, layers: int | None = None) -> dict:
    """The Qwen2 config values of ``shape``, with ``layers`` decoder layers when given."""
    config = dict(SHAPES[shape])
    if layers:
        config["num_hidden_layers"] = layers
    return config


def build_random_model(shape: str, layers: int | None, out: Path, texts: list[str]) -> Path:
    """A Qwen2 of ``shape`` with random bf16 weights made on the GPU, and a small tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from text2sql.modeling.tiny import train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=4096)  # ids below 4096; the head is full size
    config = Qwen2Config(**shape_config(shape, layers), bos_token_id=None,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def train_worker(args: argparse.Namespace) -> None:
    """One training run (in its own process); prints ``RESULT {metrics}``."""
    from text2sql.runtime.reproducibility import pin_cpu_numerics, threads_per_process

    pin_cpu_numerics(threads_per_process(1))  # as stages/train.py, before torch is imported
    if args.backend == "unsloth":
        from text2sql.modeling.lora import configure_unsloth_environment

        configure_unsloth_environment()
        import unsloth  # noqa: F401
    from bench_train import steady_real_tokens_per_s, step_timer

    from text2sql.data.prepare import prepare_in_memory
    from text2sql.modeling.lora import unsloth_packed_attention
    from text2sql.params import LoraParams, load_params
    from text2sql.training.sft import train

    rows = prepare_in_memory(load_params("prepare", REPO / "params.yaml"),
                             root=str(REPO))["train"][: args.examples]
    params = load_params("train", REPO / "params.yaml").model_copy(update={
        "model_name": str(args.model), "backend": args.backend, "epochs": 1.0,
        "load_in_4bit": True, "learning_rate": 2.0e-4, "batch_size": BATCH_SIZE,
        "max_seq_length": None, "batching": args.batching,
        "lora": LoraParams(modules_to_save=[]), "logging_steps": 5})
    timer = step_timer()
    out = Path(args.out)
    metrics = train(params, rows, out, callbacks=[timer])
    metrics["steady_real_tokens_per_s"] = round(
        steady_real_tokens_per_s(timer.ends, metrics["train_tokens"]), 1)
    metrics["attention"] = unsloth_packed_attention() if args.backend == "unsloth" else "sdpa"
    print("RESULT " + json.dumps(metrics))


def run_bounded(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess | str:
    """``cmd`` run to its end, or killed after ``timeout_s`` (then a line saying so)."""
    if timeout_s <= 0:
        return "skipped: time budget"
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"killed: past the time budget ({timeout_s:.0f} s left for it)"


def run_training(model: Path, backend: str, examples: int, out: Path, batching: str,
                 timeout_s: float) -> dict | str:
    cmd = [sys.executable, __file__, "--worker", "--backend", backend, "--model", str(model),
           "--examples", str(examples), "--out", str(out),
           "--batching", batching]
    proc = run_bounded(cmd, timeout_s)
    if isinstance(proc, str):
        return proc
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        return f"failed: {(proc.stderr or proc.stdout)[-1500:]}"
    return json.loads(line[-1][7:])


def training_table(results: dict[tuple[str, str], dict | str]) -> list[str]:
    lines = ["| shape | backend | attention | batching | tokens/s | real tokens/s | "
             "real tokens/s after warm-up | padding share | peak memory (MiB) | final loss |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (shape, backend), r in results.items():
        if isinstance(r, str):
            lines.append(f"| {shape} | {backend} | {r.splitlines()[0][:80]} | | | | | | | |")
            continue
        lines.append(f"| {shape} | {backend} | {r.get('attention', '')} | {r.get('batching', '')} | "
                     f"{r['tokens_per_s']:,.0f} | "
                     f"{r['real_tokens_per_s']:,.0f} | {r['steady_real_tokens_per_s']:,.0f} | "
                     f"{r['padding_share']:.3f} | {r['peak_memory_mb']:,.0f} | "
                     f"{r['final_loss']:.3f} |")
    return lines


def goal_lines(results: dict[tuple[str, str], dict | str]) -> list[str]:
    """Unsloth / PEFT per shape, and the goals checked at the 1.5B shape."""
    lines = []
    for shape in dict.fromkeys(s for s, _ in results):
        u, p = results.get((shape, "unsloth")), results.get((shape, "peft"))
        if not isinstance(u, dict) or not isinstance(p, dict):
            lines.append(f"{shape}: no ratio (a run failed or was skipped)")
            continue
        speed = u["steady_real_tokens_per_s"] / p["steady_real_tokens_per_s"]
        memory = u["peak_memory_mb"] / p["peak_memory_mb"]
        lines.append(f"{shape}: Unsloth / PEFT real tokens/s after warm-up {speed:.2f}x, "
                     f"peak memory {memory:.2f}x")
        if shape == "1.5b":
            met = (speed >= GOAL_SPEEDUP, memory <= GOAL_MEMORY,
                   u["steady_real_tokens_per_s"] >= GOAL_REAL_TOKENS_PER_S)
            lines.append(f"goal at 1.5b: speed >= {GOAL_SPEEDUP}x {'met' if met[0] else 'NOT met'}"
                         f"; memory <= {GOAL_MEMORY}x {'met' if met[1] else 'NOT met'}; "
                         f">= {GOAL_REAL_TOKENS_PER_S:,} real tokens/s "
                         f"{'met' if met[2] else 'NOT met'}")
    return lines


def package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="1.5b,7b")
    ap.add_argument("--layers-7b", type=int, default=8, help="decoder layers of the 7B shape")
    ap.add_argument("--examples", type=int, default=320, help="training examples per run")
    ap.add_argument("--budget-s", type=float, default=450,
                    help="hard limit in seconds for everything (a run past it is killed)")
    ap.add_argument("--tests-s", type=float, default=120, help="limit for the CUDA tests")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-generation", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--batching", default="auto",
                    help="train.batching: auto (padding-free unless Unsloth lacks a kernel for "
                         "it), padding_free, grouped or padded")
    args = ap.parse_args()
    if args.worker:
        train_worker(args)
        return 0
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here; run it on a machine with one", file=sys.stderr)
        return 2
    start = time.monotonic()

    def left() -> float:
        return args.budget_s - (time.monotonic() - start)

    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"xformers {package_version('xformers')}, flash-attn {package_version('flash-attn')}")
    if not args.skip_tests:
        tests = run_bounded([sys.executable, "-m", "pytest", "-m", "cuda and not slow", "-q",
                             "-p", "no:cacheprovider", "tests/"], min(left(), args.tests_s))
        if isinstance(tests, str):
            print(f"\n## CUDA tests: {tests}\n")
        else:
            print(f"\n## CUDA tests (exit {tests.returncode})\n")
            print("\n".join(tests.stdout.strip().splitlines()[-15:]))
    from bench_infer import sample_prompts

    _, texts = sample_prompts(8)
    results: dict[tuple[str, str], dict | str] = {}
    adapter_for_generation = None
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            if left() <= 0:
                results[shape, "unsloth"] = results[shape, "peft"] = "skipped: time budget"
                continue
            layers = args.layers_7b if shape == "7b" else None
            model = build_random_model(shape, layers, Path(tmp) / shape, texts)
            for backend in ("unsloth", "peft"):
                out = Path(tmp) / f"{shape}-{backend}"
                results[shape, backend] = run_training(model, backend, args.examples, out,
                                                      args.batching, left())
                if shape == "1.5b" and backend == "unsloth" and isinstance(results[shape, backend], dict):
                    adapter_for_generation = out
        layers_note = f", 7b with {args.layers_7b} of 28 layers" if "7b" in args.shapes else ""
        print(f"\n## QLoRA training, {args.examples} examples, batch {BATCH_SIZE}, "
              f"batching {args.batching}{layers_note}\n")
        print("\n".join(training_table(results)))
        print("\n" + "\n".join(goal_lines(results)))
        if not args.skip_generation and adapter_for_generation is not None:
            print("\n## Batched generation (1.5B shape, 4-bit training adapter)\n")
            gen = run_bounded([sys.executable, "bench/bench_infer.py", "--adapter",
                               str(adapter_for_generation), "--n", "32", "--batch-sizes", "1,32",
                               "--max-new-tokens", "64", "--repeat", "1"], left())
            print(gen if isinstance(gen, str) else gen.stdout[-4000:])
    print(f"\nbench_gpu: {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
