"""Merged or not: what merging a LoRA adapter into 16-bit weights does to the model.

    python bench/bench_merge.py                          # trains the built-in model briefly
    python bench/bench_merge.py --adapter models/aligned # an adapter of the built-in model

Loads the base in float32, bfloat16 and float16, applies the adapter either merged
into the weights or kept beside them (as PEFT trains it), and compares each with the
float32 model on the gold answers of sample evaluation questions, teacher-forced:
mean absolute error of the answer tokens' log-probabilities, and the share of answer
positions whose argmax token is the float32 model's. ``delta_error`` is how far the
merged weights' change is from the adapter's delta, relative to the delta
(||(W + delta rounded) - W - delta|| / ||delta|| over the LoRA-targeted weights).
The inference core merges in float32 only (see ``text2sql.inference.hf.choose_base``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]


def prepared_rows() -> dict[str, list[dict]]:
    """The sample data through the prepare core with the default params, in memory."""
    from text2sql.data.prepare import prepare_in_memory
    from text2sql.params import load_params

    return prepare_in_memory(load_params("prepare", REPO / "params.yaml"), root=str(REPO))


def answer_logprobs(model, tokenized) -> tuple[list, list]:
    """Per example: log-probabilities of the gold answer tokens and the argmax tokens there."""
    import torch

    logprobs, argmaxes = [], []
    with torch.inference_mode():
        for t in tokenized:
            ids = torch.tensor([t.input_ids])
            start = t.labels.index(next(x for x in t.labels if x != -100))
            logits = model(ids).logits[0, start - 1:-1].double()
            answer = ids[0, start:]
            logprobs.append(torch.log_softmax(logits, -1).gather(1, answer[:, None]).squeeze(1))
            argmaxes.append(logits.argmax(-1))
    return logprobs, argmaxes


def delta_error(unmerged, merged) -> float:
    """||merged weight change - LoRA delta|| / ||LoRA delta|| over every LoRA layer."""
    import torch

    err, norm = 0.0, 0.0
    merged_modules = dict(merged.named_modules())
    for name, module in unmerged.named_modules():
        if not hasattr(module, "get_delta_weight") or "default" not in module.lora_A:
            continue
        delta = module.get_delta_weight("default").double()
        base = module.base_layer.weight.double()
        target = merged_modules[name.removeprefix("base_model.model.")].weight.double()
        err += float(torch.linalg.norm(target - base - delta)) ** 2
        norm += float(torch.linalg.norm(delta)) ** 2
    return (err / norm) ** 0.5 if norm else 0.0


def synthetic_delta_error(ratio: float, dtype) -> float:
    """``delta_error`` of merging a rank-16 delta whose size is ``ratio`` times the weight's
    (root mean square of elements) into a 1024 x 1024 weight of N(0, 0.02) in ``dtype``."""
    import torch

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(1024, 1024, generator=gen, dtype=torch.float64) * 0.02
    delta = torch.randn(1024, 16, generator=gen, dtype=torch.float64) @ \
        torch.randn(16, 1024, generator=gen, dtype=torch.float64)
    delta *= ratio * weight.pow(2).mean().sqrt() / delta.pow(2).mean().sqrt()
    stored = weight.to(dtype).double()
    merged = (weight.to(dtype) + delta.to(dtype)).double()
    return float(torch.linalg.norm(merged - stored - delta) / torch.linalg.norm(delta))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", type=Path, help="a trained adapter of the built-in model")
    parser.add_argument("--n", type=int, default=32, help="evaluation examples (default: 32)")
    parser.add_argument("--epochs", type=float, default=1.0,
                        help="training epochs (256 examples) when no --adapter is given "
                             "(default: 1)")
    args = parser.parse_args(argv)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from text2sql.modeling.tiny import BASE_MODEL_DIR
    from text2sql.params import load_params
    from text2sql.training.sft import tokenize_example, train

    rows = prepared_rows()
    with tempfile.TemporaryDirectory() as tmp:
        adapter = args.adapter
        if adapter is None:
            adapter = Path(tmp) / "adapter"
            params = load_params("train", REPO / "params.yaml").model_copy(
                update={"epochs": args.epochs})
            train(params, rows["train"][:256], adapter)
        tokenizer = AutoTokenizer.from_pretrained(adapter)
        tokenized = [tokenize_example(tokenizer, r["prompt"], r["completion"][0]["content"])
                     for r in rows["eval"][:args.n]]
        base_dir = adapter / BASE_MODEL_DIR
        table, reference = [], None
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            unmerged = PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype), adapter).eval()
            merged = copy.deepcopy(unmerged).merge_and_unload().eval()
            for how, model in (("unmerged", unmerged), ("merged", merged)):
                logprobs, argmaxes = answer_logprobs(model, tokenized)
                if reference is None:
                    reference = (logprobs, argmaxes)
                lp_err = torch.cat([(a - b).abs() for a, b in zip(logprobs, reference[0])])
                agree = torch.cat([a == b for a, b in zip(argmaxes, reference[1])]).double()
                table.append([str(dtype).removeprefix("torch."), how,
                              f"{lp_err.mean():.2e}", f"{lp_err.max():.2e}",
                              f"{agree.mean():.4f}",
                              f"{delta_error(unmerged, merged):.3f}" if how == "merged" else ""])
    print(f"{args.n} gold answers ({sum(len(t) for t in reference[0])} tokens), teacher-forced; "
          "reference: float32, unmerged")
    print(tabulate(table, headers=["dtype", "adapter", "|d logprob| mean", "max",
                                   "argmax = fp32", "delta_error"]))
    ratios = (1e-1, 1e-2, 1e-3, 1e-4)
    print("\ndelta_error of a merge by the delta's size relative to the weight's (synthetic)")
    print(tabulate([[name, *(f"{synthetic_delta_error(r, dtype):.3f}" for r in ratios)]
                    for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16),
                                        ("float32", torch.float32))],
                   headers=["dtype", *(f"{r:g}" for r in ratios)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
