"""Predicting SQL for prepared examples: the core of the ``infer`` stage and of ``predict``.

Every prediction keeps the model's raw output beside the extracted SQL. With
``infer.num_samples`` = N > 1 each question gets N sampled candidates, voted on by
executing them on the question's database (:mod:`text2sql.consistency`); the
record then also lists every candidate with its log-probability and error kind.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from text2sql.consistency import Candidate, choose_all
from text2sql.extract import extract_sql
from text2sql.io import DataError
from text2sql.params import InferParams

REQUIRED_FIELDS = ("id", "db_id", "question", "prompt")


def check_rows(numbered: Iterable[tuple[int, dict[str, Any]]], source: str | Path, *,
               need_db: bool) -> list[dict[str, Any]]:
    """The rows, after checking each has what inference needs; errors name file and line."""
    rows = []
    for lineno, row in numbered:
        for key in REQUIRED_FIELDS:
            if key not in row:
                raise DataError(f"{source}:{lineno}: missing field {key!r} (every prepared example "
                                f"needs {', '.join(REQUIRED_FIELDS)}; rerun the prepare stage)")
        prompt = row["prompt"]
        if not (isinstance(prompt, list) and prompt
                and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt)):
            raise DataError(f"{source}:{lineno}: field 'prompt' must be a list of chat messages "
                            "({\"role\": ..., \"content\": ...})")
        if need_db:
            db = row.get("db_path")
            if not db:
                raise DataError(f"{source}:{lineno}: db_path is empty, but infer.num_samples > 1 "
                                "votes by executing candidates on the example's SQLite file "
                                "(set infer.num_samples=1, or use a source with databases)")
            if not Path(db).is_file():
                raise DataError(f"{source}:{lineno}: db_path {db!r}: SQLite file not found "
                                "(run from the repository root, or rerun the prepare stage)")
        rows.append(row)
    if not rows:
        raise DataError(f"{source}: no examples to predict")
    return rows


def predict(rows: Sequence[dict[str, Any]], adapter_dir: str | Path, params: InferParams, *,
            progress: bool = True
            ) -> tuple[list[dict[str, Any]], dict[str, float | str | bool]] | None:
    """Load the adapter, predict every row; prediction records (input order) and metrics.

    The metrics also say which base model, precision and 4-bit setting wrote them. In a
    data-parallel run every process generates a share of the batches and process 0 gets
    the result; the others get None.
    """
    from text2sql.generation import choose_base, load_for_inference

    t0 = time.perf_counter()
    base = choose_base(adapter_dir, load_in_4bit=params.load_in_4bit)
    model, tokenizer = load_for_inference(adapter_dir, load_in_4bit=params.load_in_4bit)
    load_s = time.perf_counter() - t0
    predicted = predict_with_model(model, tokenizer, rows, params, progress=progress)
    if predicted is None:
        return None
    records, metrics = predicted
    return records, {**base.metrics(), **metrics, "load_s": round(load_s, 2)}


def predict_with_model(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]],
                       params: InferParams, *, progress: bool = True
                       ) -> tuple[list[dict[str, Any]], dict[str, float]] | None:
    """Generate, extract and (with N > 1) vote, with a model already loaded.

    None in a data-parallel process other than process 0 (see :func:`generate_shared`).
    """
    start = time.perf_counter()
    gens = generate_shared(model, tokenizer, [r["prompt"] for r in rows], params,
                           progress=progress)
    if gens is None:
        return None
    generate_s = time.perf_counter() - start
    records = []
    for row, gen in zip(rows, gens, strict=True):
        records.append({"id": row["id"], "db_id": row["db_id"], "question": row["question"],
                        "raw": gen.texts[0], "sql": extract_sql(gen.texts[0]),
                        "seconds": round(gen.seconds, 4)})
    n, n_seq = len(records), len(records) * params.num_samples
    new_tokens = sum(g.new_tokens for g in gens)
    metrics: dict[str, float] = {
        "n": n,
        "num_samples": params.num_samples,
        "sequences_per_s": round(n_seq / generate_s, 3) if generate_s else 0.0,
        "questions_per_s": round(n / generate_s, 3) if generate_s else 0.0,
        "generated_tokens_per_s": round(new_tokens / generate_s, 1) if generate_s else 0.0,
        "generated_tokens": new_tokens,
        "generate_s": round(generate_s, 2),
    }
    if params.num_samples > 1:
        metrics.update(_vote_all(rows, gens, records, params, progress=progress))
    metrics["wall_s"] = round(time.perf_counter() - start, 2)
    return records, metrics


def generate_shared(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]]],
                    params: InferParams, *, progress: bool = True) -> list[Any] | None:
    """:func:`text2sql.generation.generate` for every prompt, shared out over the processes.

    Process k of N runs batches k, k + N, ... of the one-process plan
    (:func:`text2sql.generation.batch_plan`), so every batch, padding included, is the one
    a single process runs: greedy answers are the same, bit for bit. Process 0 gathers
    them in input order; the others get None. Sampling draws from each process's own
    random stream (seeded with ``infer.seed``): reproducible for the same number of processes.
    """
    from text2sql.distributed import gather_to_main, rank_and_size
    from text2sql.generation import batch_plan, generate, prompt_lengths, render_prompts

    rank, size = rank_and_size()
    settings = dict(batch_size=params.batch_size, max_new_tokens=params.max_new_tokens,
                    num_samples=params.num_samples, temperature=params.temperature,
                    seed=params.seed, progress=progress and rank == 0)
    if size == 1:
        return generate(model, tokenizer, prompts, **settings)
    plan = batch_plan(prompt_lengths(tokenizer, render_prompts(tokenizer, prompts)),
                      params.batch_size, params.num_samples)
    mine = [i for k, batch in enumerate(plan) if k % size == rank for i in batch]
    gens = generate(model, tokenizer, [prompts[i] for i in mine], **settings)
    gathered = gather_to_main(list(zip(mine, gens, strict=True)))
    if gathered is None:
        return None
    ordered: list[Any] = [None] * len(prompts)
    for pairs in gathered:
        for i, gen in pairs:
            ordered[i] = gen
    return ordered


def _vote_all(rows: Sequence[dict[str, Any]], gens: Sequence[Any], records: list[dict[str, Any]],
              params: InferParams, *, progress: bool) -> dict[str, float]:
    """Replace each record's greedy-slot answer with the self-consistent choice.

    The candidates run in worker processes (:func:`text2sql.consistency.choose_all`):
    a candidate that exhausts memory or hangs costs a vote, not the stage.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    questions = []
    for row, gen in zip(rows, gens, strict=True):
        db = row.get("db_path")
        if not db:
            raise DataError(f"example {row['id']!r}: db_path is empty; infer.num_samples > 1 "
                            "needs the example's SQLite file")
        questions.append((db, [Candidate(raw, extract_sql(raw), lp)
                               for raw, lp in zip(gen.texts, gen.logprobs, strict=True)]))
    with tqdm(total=len(questions), desc="vote", unit="question", disable=not progress) as bar:
        results = choose_all(questions, timeout_s=params.timeout_s, max_rows=params.max_rows,
                             prefer_nonempty=params.prefer_nonempty,
                             on_result=lambda i, v: bar.update())
    valid, all_failed, votes = 0, 0, 0
    for (_, candidates), rec, result in zip(questions, records, results, strict=True):
        best = candidates[result.chosen]
        rec.update(raw=best.raw, sql=best.sql, votes=result.votes,
                   valid_candidates=result.valid,
                   candidates=[{"raw": c.raw, "sql": c.sql, "logprob": round(c.logprob, 4),
                                "error": err}
                               for c, err in zip(candidates, result.errors, strict=True)])
        valid += result.valid
        votes += result.votes
        all_failed += result.valid == 0
    n = len(records)
    return {
        "vote_s": round(time.perf_counter() - t0, 2),
        "mean_valid_candidates": round(valid / n, 3),
        "mean_winning_votes": round(votes / n, 3),
        "all_candidates_failed": all_failed,
    }
