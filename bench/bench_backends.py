"""CPU inference: transformers against llama.cpp (each GGUF type), side by side in one run.

    python bench/bench_backends.py                          # built-in tiny model, random weights
    python bench/bench_backends.py --adapter models/aligned --n 64

Makes the merged model and the f16, q8_0 and q4_k_m GGUF files with the export core, then
answers the same evaluation prompts of the sample data greedily with each: transformers
(the infer stage's batched generation, ``--batch-size``) and llama.cpp (one sequence at a
time, every core). Each backend runs in its own process, so its peak memory (max RSS,
loading included) is its own. Prints questions/s, generated tokens/s, load time, peak
memory, and how many answers equal transformers' ("same").
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def run_backend(kind: str, path: str, prompts: list, max_new_tokens: int, batch_size: int,
                queue: Any) -> None:
    """In a child process: load, generate, report timings, answers and peak memory."""
    t0 = time.perf_counter()
    if kind == "transformers":
        from text2sql.runtime.reproducibility import pin_cpu_numerics

        pin_cpu_numerics()  # as the infer stage runs it (the llama.cpp child never loads torch)
        t0 = time.perf_counter()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from text2sql.inference.hf import generate

        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        gens = generate(model, tokenizer, prompts, batch_size=batch_size,
                        max_new_tokens=max_new_tokens, progress=False)
    else:
        from text2sql.inference.llama_cpp import generate_gguf, load_gguf

        llm = load_gguf(path)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        gens = generate_gguf(llm, prompts, max_new_tokens=max_new_tokens, progress=False)
    wall = time.perf_counter() - t0
    queue.put({"load_s": load_s, "wall_s": wall, "texts": [g.texts[0] for g in gens],
               "tokens": sum(g.new_tokens for g in gens),
               "peak_mb": peak_rss_mb()})


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started (VmHWM, reset by exec; the
    ru_maxrss of a spawned child would still count its parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, path: Path, prompts: list, args: argparse.Namespace) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=run_backend, args=(kind, str(path), prompts, args.max_new_tokens,
                                                  args.batch_size, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32, help="questions (default: 32)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16,
                        help="transformers' batch (default: 16, the infer default)")
    parser.add_argument("--adapter", type=Path, default=None,
                        help="a trained adapter folder (default: the built-in model, untrained)")
    args = parser.parse_args(argv)

    from bench_infer import sample_prompts

    from text2sql.export.gguf import convert_to_gguf, quantize_gguf

    prompts, texts = sample_prompts(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.adapter is not None:
            from text2sql.export.pipeline import merge_adapter

            merged = merge_adapter(args.adapter, work / "merged")
        else:
            from text2sql.modeling.tiny import build_tiny_model
            from text2sql.params import load_params

            train = load_params("train", REPO / "params.yaml")
            merged = build_tiny_model(texts, work / "merged", seed=0,
                                      **train.builtin.model_dump())
        f16 = convert_to_gguf(merged, work / "model-f16.gguf", name="bench")
        files = {"f16": f16,
                 "q8_0": quantize_gguf(f16, work / "model-q8_0.gguf", "q8_0"),
                 "q4_k_m": quantize_gguf(f16, work / "model-q4_k_m.gguf", "q4_k_m")}
        print(f"model: {args.adapter or 'builtin:tiny-qwen2 (random weights)'}; "
              f"{len(prompts)} questions, max_new_tokens={args.max_new_tokens}, greedy, "
              f"CPU with {len(os.sched_getaffinity(0))} cores")
        runs = [("transformers", f"fp32, batch {args.batch_size}", merged)]
        runs += [("llama.cpp", name, path) for name, path in files.items()]
        rows, reference = [], None
        for kind, what, path in runs:
            r = measure(kind, path, prompts, args)
            reference = reference or r["texts"]
            same = sum(a == b for a, b in zip(r["texts"], reference, strict=True))
            rows.append([kind, what, f"{path.stat().st_size / 2**20:.1f}" if path.is_file()
                         else "-", f"{r['load_s']:.2f}", f"{len(prompts) / r['wall_s']:.2f}",
                         f"{r['tokens'] / r['wall_s']:.1f}", f"{r['peak_mb']:.0f}",
                         f"{same}/{len(prompts)}"])
    print(tabulate(rows, headers=["backend", "weights", "file MB", "load s", "questions/s",
                                  "tokens/s", "peak MB", "same"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
