"""The ``export`` stage's core: merged weights, GGUF files, an Ollama Modelfile, a model card.

Every GGUF file is checked before it is kept: the evaluation questions are answered
greedily by each GGUF file through llama.cpp (in a child process: a crash there is an error
naming the file), and each answer set is scored for execution accuracy (EX) against the
reference: the infer stage's greedy answers of the same adapter (what was evaluated), or,
where infer sampled (``infer.num_samples`` > 1), the merged model's answers through
transformers. The f16 file must write the reference's SQL for ``export.min_same_sql`` of the
questions, and each file's EX may fall at most ``export.max_ex_drop`` below the reference's;
otherwise the stage fails and nothing is written. The card lists the tensor types each file
really holds (a q4_k_m file of a model whose rows are not a multiple of 256 is mostly q5_0
and q8_0).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text2sql.export.gguf import GGUF_FORMATS
from text2sql.io import DataError, write_text

MERGED = "merged"
INFER = "infer"  # the reference, when it is the infer stage's predictions
FORMATS = (MERGED, *GGUF_FORMATS)
MODELFILE = "Modelfile"
MODEL_CARD = "README.md"
# the Modelfile points at the smallest file exported
MODELFILE_PREFERENCE = ("gguf-q4_k_m", "gguf-q8_0", "gguf-f16")


def gguf_file_name(fmt: str) -> str:
    return f"model-{GGUF_FORMATS[fmt]}.gguf"


@dataclass
class Fidelity:
    """How one exported format answers the evaluation questions."""

    fmt: str
    sql: dict[str, str]  # example id -> extracted SQL
    execution_accuracy: float = 0.0
    same_sql: float = 1.0  # share of questions answered with the reference's SQL
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Base + adapter merged in float32 on the CPU, saved in float32 (loadable without PEFT).

    Always float32, whatever the machine: on a GPU the base would load in bfloat16, and a
    LoRA delta merged into bfloat16 weights is rounded to their coarse grid (17-79% of a
    small delta lost, bench/bench_merge.py), so the GGUF files would be made from, and
    checked against, a model infer never evaluated. The f16 GGUF is converted from these
    float32 tensors: each is the float32 merge rounded once, to f16. The merged folder is
    4 bytes a parameter (pass ``dtype=torch.bfloat16`` to ``from_pretrained`` to halve it).
    """
    import torch

    from text2sql.inference.hf import load_for_inference

    model, tokenizer = load_for_inference(adapter_dir, precision="float32")  # merged there
    out_dir = Path(out_dir)
    model.to(torch.float32).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def answer_with_transformers(model_dir: Path, rows: Sequence[dict[str, Any]], *,
                             max_new_tokens: int, batch_size: int, progress: bool) -> dict[str, str]:
    """Greedy SQL for each row from a merged model folder, through transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from text2sql.inference.hf import generate
    from text2sql.sql.extract import extract_sql

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()
    gens = generate(model, tokenizer, [r["prompt"] for r in rows], batch_size=batch_size,
                    max_new_tokens=max_new_tokens, progress=progress)
    return {r["id"]: extract_sql(g.texts[0]) for r, g in zip(rows, gens, strict=True)}


def answer_with_llama_cpp(gguf_file: Path, rows: Sequence[dict[str, Any]], *,
                          max_new_tokens: int, progress: bool) -> dict[str, str]:
    """Greedy SQL for each row from a GGUF file, through llama.cpp (in a child process: a
    crash there raises NativeCrash naming the file, its format and the signal)."""
    from text2sql.inference.llama_cpp import GGUFModel
    from text2sql.sql.extract import extract_sql

    with GGUFModel(gguf_file) as gguf:
        gens = gguf.generate([r["prompt"] for r in rows], max_new_tokens=max_new_tokens,
                             progress=progress)
    return {r["id"]: extract_sql(g.texts[0]) for r, g in zip(rows, gens, strict=True)}


def execution_accuracy(rows: Sequence[dict[str, Any]], sql: dict[str, str]) -> float:
    from text2sql.evaluation.scoring import score, summarize

    return summarize(score(rows, sql, workers=1))["execution_accuracy"]


def trained_system_prompt(rows: Sequence[dict[str, Any]]) -> str:
    """The system prompt of the prepared questions (the one the model was trained with:
    ``prepare.answer: reasoning`` has its own), else the default one."""
    from text2sql.data.prompts import SYSTEM_PROMPT

    first = rows[0]["prompt"][0] if rows and rows[0].get("prompt") else {}
    return first["content"] if first.get("role") == "system" else SYSTEM_PROMPT


def write_modelfile(out_dir: Path, gguf_name: str, tokenizer: Any, system: str) -> Path:
    """``Modelfile`` beside the GGUF: its template, stop tokens, temperature 0, system prompt.

    The stops are the end-of-turn tokens alone, so an answer that reasons first runs on
    through its steps and code blocks to its final query.
    """
    from text2sql.export.modelfile import ollama_template, render_modelfile, role_blocks
    from text2sql.inference.hf import stop_token_ids

    blocks = role_blocks(lambda messages, prompt: tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=prompt))
    stops = tokenizer.convert_ids_to_tokens(stop_token_ids(tokenizer))
    path = out_dir / MODELFILE
    write_text(path, render_modelfile(gguf_name, ollama_template(blocks), stops, system))
    return path


def export_model(adapter_dir: str | Path, out_dir: Path, formats: Sequence[str],
                 rows: Sequence[dict[str, Any]], *, max_new_tokens: int, batch_size: int,
                 min_same_sql: float, max_ex_drop: float, progress: bool = True,
                 reference_sql: dict[str, str] | None = None) -> dict[str, float]:
    """Write the requested ``formats`` into ``out_dir`` (empty, temporary); the metrics.

    The merged model and the f16 GGUF are made whenever a GGUF is asked for (they are
    what the others are made from); they are kept only when asked for. ``reference_sql``
    (example id -> SQL): the infer stage's greedy answers of the same adapter, the
    reference the GGUF files are held to; without it the merged model answers the rows
    through transformers first.
    """
    from transformers import AutoTokenizer

    from text2sql.export.gguf import convert_to_gguf, llama_architecture, quantize_gguf

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise DataError(f"export.formats: unknown format(s) {unknown} (valid: {', '.join(FORMATS)})")
    wants_gguf = [f for f in FORMATS if f in formats and f in GGUF_FORMATS]
    metrics: dict[str, float] = {"n": len(rows)}
    with tempfile.TemporaryDirectory(prefix="export-", dir=out_dir.parent) as scratch:
        scratch_dir = Path(scratch)
        merged = (out_dir if MERGED in formats else scratch_dir) / MERGED
        t0 = time.perf_counter()
        merge_adapter(adapter_dir, merged)
        metrics["merge_s"] = round(time.perf_counter() - t0, 2)
        if wants_gguf:
            llama_architecture(merged)  # an architecture llama.cpp lacks fails before any work
        f16 = (out_dir if "gguf-f16" in formats else scratch_dir) / gguf_file_name("gguf-f16")
        files: dict[str, Path] = {}
        if wants_gguf:
            t0 = time.perf_counter()
            files["gguf-f16"] = convert_to_gguf(merged, f16, name="text2sql")
            for fmt in wants_gguf:
                if fmt != "gguf-f16":
                    files[fmt] = quantize_gguf(f16, out_dir / gguf_file_name(fmt),
                                               GGUF_FORMATS[fmt])
            metrics["convert_s"] = round(time.perf_counter() - t0, 2)
        if rows:
            results = check_fidelity(merged, files, rows, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, progress=progress,
                                     reference_sql=reference_sql)
            for r in results:
                metrics[f"execution_accuracy_{r.fmt}"] = r.execution_accuracy
                metrics[f"same_sql_{r.fmt}"] = r.same_sql
                metrics[f"generate_{r.fmt}_s"] = r.seconds
            check_thresholds(results, min_same_sql=min_same_sql, max_ex_drop=max_ex_drop)
        else:
            results = []
        kept = {f: p for f, p in files.items() if f in formats}
        if MERGED in formats:
            kept[MERGED] = merged
        for fmt, path in kept.items():
            metrics[f"size_bytes_{fmt}"] = dir_size(path)
        if kept.keys() & set(MODELFILE_PREFERENCE):
            chosen = next(f for f in MODELFILE_PREFERENCE if f in kept)
            write_modelfile(out_dir, kept[chosen].name, AutoTokenizer.from_pretrained(merged),
                            trained_system_prompt(rows))
        write_text(out_dir / MODEL_CARD, model_card(out_dir, formats, results, len(rows)))
    return metrics


def check_fidelity(merged: Path, files: dict[str, Path], rows: Sequence[dict[str, Any]], *,
                   max_new_tokens: int, batch_size: int, progress: bool,
                   reference_sql: dict[str, str] | None = None) -> list[Fidelity]:
    """EX of the reference (infer's answers, or the merged model's) and of each GGUF file,
    and how often each file writes the reference's SQL."""
    t0 = time.perf_counter()
    if reference_sql is not None:
        missing = [r["id"] for r in rows if r["id"] not in reference_sql]
        if missing:
            raise DataError(f"the infer stage's predictions lack {len(missing)} of the "
                            f"{len(rows)} questions (first: {missing[0]!r}); run "
                            "`dvc repro infer` first")
        reference = Fidelity(INFER, {r["id"]: reference_sql[r["id"]] for r in rows})
    else:
        reference = Fidelity(MERGED, answer_with_transformers(
            merged, rows, max_new_tokens=max_new_tokens, batch_size=batch_size,
            progress=progress))
    reference.seconds = round(time.perf_counter() - t0, 2)
    results = [reference]
    for fmt in GGUF_FORMATS:
        if fmt in files:
            t0 = time.perf_counter()
            r = Fidelity(fmt, answer_with_llama_cpp(files[fmt], rows, max_new_tokens=max_new_tokens,
                                                    progress=progress))
            r.seconds = round(time.perf_counter() - t0, 2)
            r.same_sql = round(sum(r.sql[k] == reference.sql[k] for k in reference.sql)
                               / len(reference.sql), 4)
            results.append(r)
    for r in results:
        r.execution_accuracy = execution_accuracy(rows, r.sql)
    return results


def check_thresholds(results: Sequence[Fidelity], *, min_same_sql: float,
                     max_ex_drop: float) -> None:
    """Fail when the f16 file strays from transformers or a file loses too much EX."""
    reference = results[0]
    whose = "the merged model's" if reference.fmt == MERGED else "the infer stage's"
    problems = []
    for r in results[1:]:
        if r.fmt == "gguf-f16" and r.same_sql < min_same_sql:
            problems.append(f"{r.fmt} writes {whose} SQL for {r.same_sql:.1%} of the "
                            f"questions (export.min_same_sql: {min_same_sql:.0%})")
        drop = round(reference.execution_accuracy - r.execution_accuracy, 4)
        if drop > max_ex_drop:
            problems.append(f"{r.fmt} EX {r.execution_accuracy:.4f} is {drop:.4f} below "
                            f"{whose} {reference.execution_accuracy:.4f} "
                            f"(export.max_ex_drop: {max_ex_drop})")
    if problems:
        raise DataError("export: the fidelity check failed, nothing was written: "
                        + "; ".join(problems))


def dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file())


def model_card(out_dir: Path, formats: Sequence[str], results: Sequence[Fidelity], n: int) -> str:
    """The card: each file with its size and sha256, the tensor types each GGUF holds, and
    each format's measured EX."""
    from text2sql.export.gguf import describe_tensor_types, tensor_types
    from text2sql.runtime.model_card import file_sha256

    lines = ["# text2sql export", "",
             "Written by the export stage (`dvc exp run -S 'export.formats=[...]'`).", ""]
    if not formats:
        return "\n".join(lines + ["No format was requested (export.formats is empty).", ""])
    lines += ["| file | bytes | sha256 |", "| --- | ---: | --- |"]
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file() and p.name != MODEL_CARD):
        lines.append(f"| {path.relative_to(out_dir)} | {path.stat().st_size} | "
                     f"`{file_sha256(path)}` |")
    ggufs = sorted(out_dir.glob("*.gguf"))
    if ggufs:
        lines += ["", "Tensor types each GGUF file holds (share of its parameters; a k-quant "
                  "tensor needs rows that are a multiple of 256 long, others fall back):", "",
                  "| file | tensor types |", "| --- | --- |"]
        lines += [f"| {p.name} | {describe_tensor_types(tensor_types(p))} |" for p in ggufs]
    if results:
        reference = ("infer: the infer stage's predictions of the same adapter"
                     if results[0].fmt == INFER else "merged: transformers, float32")
        lines += ["", f"Execution accuracy on {n} evaluation questions, greedy decoding "
                  f"(reference {reference}; GGUF: llama.cpp). *Same SQL*: share of questions "
                  f"answered with exactly the reference's SQL.", "",
                  "| format | EX | same SQL |", "| --- | ---: | ---: |"]
        for r in results:
            if r.fmt in (MERGED, INFER) or r.fmt in formats:
                lines.append(f"| {r.fmt} | {r.execution_accuracy:.4f} | {r.same_sql:.4f} |")
    if (out_dir / MODELFILE).is_file():
        lines += ["", "Run it with Ollama: `ollama create text2sql -f Modelfile` in this folder."]
    return "\n".join(lines) + "\n"


def empty_export(out_dir: Path) -> None:
    """The no-op export into ``out_dir`` (empty): only a card saying nothing was requested."""
    write_text(out_dir / MODEL_CARD, model_card(out_dir, [], [], 0))
