"""Predicting SQL for prepared examples: the core of the ``infer`` stage and of ``predict``.

Every prediction keeps the model's raw output beside the extracted SQL. With
``infer.num_samples`` = N > 1 each question gets N sampled candidates, voted on by
executing them on the question's database (:mod:`text2sql.inference.voting`); the
record then also lists every candidate with its log-probability and error kind.

Multi-turn rows (with ``conversation``, ``turn`` and ``history``) are predicted with
their earlier turns' SQL as the data gives it (``infer.history: gold``, as SParC's
evaluation does) or as the model wrote it (``predicted``): then turn 0 of every
conversation is generated first, then turn 1 with those answers in its prompt, and so on.

With ``infer.revise_rounds`` = R > 0 every candidate whose SQL fails or returns no rows is
asked again, up to R times, before any vote (:mod:`text2sql.inference.revision`); the record
then says how many follow-up turns its answer took and what the earlier answers got (and, when
its last answer failed after an earlier one ran and so was set aside, that last answer).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from text2sql.inference.revision import (
    Attempt,
    RevisionTally,
    attempts_of,
    revise,
    revision_metrics,
)
from text2sql.inference.voting import Candidate, choose_all
from text2sql.io import DataError
from text2sql.params import InferParams
from text2sql.sql.extract import extract_sql

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
                                "and infer.revise_rounds > 0 run candidates on the example's "
                                "SQLite file (set infer.num_samples=1 and infer.revise_rounds=0, "
                                "or use a source with databases)")
            if not Path(db).is_file():
                raise DataError(f"{source}:{lineno}: db_path {db!r}: SQLite file not found "
                                "(run from the repository root, or rerun the prepare stage)")
        rows.append(row)
    if not rows:
        raise DataError(f"{source}: no examples to predict")
    return rows


def runs_candidates(params: InferParams) -> bool:
    """Whether inference runs candidates on each example's database (to vote, to revise)."""
    return params.num_samples > 1 or params.revise_rounds > 0


def predict(rows: Sequence[dict[str, Any]], model_path: str | Path, params: InferParams, *,
            progress: bool = True
            ) -> tuple[list[dict[str, Any]], dict[str, float | str | bool]] | None:
    """Load the model, predict every row; prediction records (input order) and metrics.

    ``model_path`` is the adapter folder (``infer.backend`` hf) or a GGUF file
    (llama.cpp). The metrics also say which model, precision and 4-bit setting wrote them.
    In a data-parallel run every process generates a share of the batches and process 0
    gets the result; the others get None.
    """
    t0 = time.perf_counter()
    generator, loaded = load_generator(model_path, params)
    load_s = time.perf_counter() - t0
    predicted = predict_with_generator(generator, rows, params, progress=progress)
    if predicted is None:
        return None
    records, metrics = predicted
    return records, {**loaded, **metrics, "load_s": round(load_s, 2)}


def load_generator(model_path: str | Path, params: InferParams
                   ) -> tuple[Callable[..., list[Any] | None], dict[str, str | bool]]:
    """``generate(prompts, **settings)`` for ``infer.backend``, and what it loaded.

    hf: the adapter on its base through transformers (:mod:`text2sql.inference.hf`), shared
    out over the processes of a data-parallel run (:func:`generate_shared`); llama.cpp: a
    GGUF file (:mod:`text2sql.inference.llama_cpp`), which runs one sequence at a time
    (``batch_size`` does not apply), in a child process that lives as long as the generator.
    """
    if params.backend == "llama.cpp":
        from text2sql.inference.llama_cpp import GGUFModel

        if params.load_in_4bit:
            raise DataError("infer.load_in_4bit applies to the hf backend; with llama.cpp the "
                            "GGUF file's own type sets the precision (e.g. model-q4_k_m.gguf)")
        gguf = GGUFModel(model_path)  # in a child process: a crash there is an error here

        def run_gguf(prompts: Sequence[Any], *, batch_size: int, **settings: Any) -> list[Any]:
            return gguf.generate(prompts, **settings)

        return run_gguf, {"base_model": str(model_path), "backend": "llama.cpp"}
    from text2sql.inference.hf import choose_base, load_for_inference

    base = choose_base(model_path, load_in_4bit=params.load_in_4bit)
    model, tokenizer = load_for_inference(model_path, load_in_4bit=params.load_in_4bit)
    return partial(generate_shared, model, tokenizer), base.metrics()


def predict_with_model(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]],
                       params: InferParams, *, progress: bool = True
                       ) -> tuple[list[dict[str, Any]], dict[str, float]] | None:
    """Generate, extract and (with N > 1) vote, with a transformers model already loaded.

    None in a data-parallel process other than process 0 (see :func:`generate_shared`).
    """
    return predict_with_generator(partial(generate_shared, model, tokenizer), rows, params,
                                  progress=progress)


def predict_with_generator(generator: Callable[..., list[Any] | None],
                           rows: Sequence[dict[str, Any]], params: InferParams, *,
                           progress: bool = True
                           ) -> tuple[list[dict[str, Any]], dict[str, float]] | None:
    """Generate with ``generator`` (see :func:`load_generator`), extract and (N > 1) vote;
    None in a data-parallel process other than process 0."""
    from text2sql.runtime.distributed import rank_and_size

    if params.revise_rounds and rank_and_size()[1] > 1:
        raise DataError("infer.revise_rounds > 0 asks failing candidates again in one "
                        "process: set infer.num_processes=1, or infer.revise_rounds=0")
    start = time.perf_counter()
    multi_turn = any("turn" in r for r in rows)
    history_mode = getattr(params, "history", "gold")
    used: list[list[str] | None] = [None] * len(rows)
    with_gold = 0
    revised = Revised([None] * len(rows)) if params.revise_rounds else None
    if multi_turn and history_mode == "predicted":
        gens, used, with_gold = _generate_turn_by_turn(generator, rows, params, revised,
                                                       progress=progress)
    else:
        gens = generator([r["prompt"] for r in rows], batch_size=params.batch_size,
                         max_new_tokens=params.max_new_tokens, num_samples=params.num_samples,
                         temperature=params.temperature, seed=params.seed, progress=progress)
        if gens is not None and revised is not None:
            _revise(generator, rows, [r["prompt"] for r in rows], gens, params, revised,
                    range(len(rows)), progress=progress)
    if gens is None:
        return None
    generate_s = time.perf_counter() - start - (revised.seconds if revised else 0.0)
    records = []
    for k, (row, gen, history_sql) in enumerate(zip(rows, gens, used, strict=True)):
        records.append({"id": row["id"], "db_id": row["db_id"], "question": row["question"],
                        "raw": gen.texts[0], "sql": extract_sql(gen.texts[0]),
                        "seconds": round(gen.seconds, 4)})
        if revised is not None:
            records[-1].update(revised.record(revised.of(k)[0]))
        if history_sql is not None:
            records[-1]["history_sql"] = history_sql  # the earlier SQL its prompt showed
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
    if multi_turn:
        metrics["history"] = history_mode
        if history_mode == "predicted":
            metrics["history_with_gold_turns"] = with_gold
    if revised is not None:
        metrics.update(revised.metrics(params.revise_rounds))
    if params.num_samples > 1:
        metrics.update(_vote_all(rows, gens, records, params, revised, progress=progress))
    metrics["wall_s"] = round(time.perf_counter() - start, 2)
    return records, metrics


@dataclass
class Revised:
    """The candidates of each row after self-correction, and how it went (rounds taken,
    follow-up tokens, seconds)."""

    attempts: list[list[Attempt] | None]  # per row, one per candidate
    tally: RevisionTally = field(default_factory=RevisionTally)
    new_tokens: int = 0
    seconds: float = 0.0

    def of(self, row: int) -> list[Attempt]:
        attempts = self.attempts[row]
        assert attempts is not None, f"row {row} was not revised"
        return attempts

    @staticmethod
    def record(attempt: Attempt) -> dict[str, Any]:
        """An answer's own SQL and text, the follow-up turns it took, what the answers
        it replaced got, and (when it went back to an earlier answer that ran) the last
        answer it set aside."""
        record = {"raw": attempt.raw, "sql": attempt.sql, "revised": attempt.rounds,
                  "revisions": [f.as_record() for f in attempt.earlier]}
        if attempt.discarded is not None:
            record["discarded"] = attempt.discarded.as_record()
        return record

    def metrics(self, rounds: int) -> dict[str, Any]:
        flat = [a for per in self.attempts if per for a in per]
        return {**revision_metrics(flat, self.tally, rounds),
                "revise_generated_tokens": self.new_tokens, "revise_s": round(self.seconds, 2)}


def _revise(generator: Callable[..., list[Any] | None], rows: Sequence[dict[str, Any]],
            prompts: Sequence[list[dict[str, str]]], gens: Sequence[Any], params: InferParams,
            revised: Revised, indices: Iterable[int], *, progress: bool) -> None:
    """Self-correction of ``gens`` (the answers to ``prompts``) into ``revised`` at
    ``indices``: every candidate is run on its example's database by the read-only runner
    in worker processes, and those that fail or return no rows are asked again
    (:func:`text2sql.inference.revision.revise`), all of a round in one greedy batch."""
    from text2sql.sql.sqlite import run_queries

    t0 = time.perf_counter()
    attempts = [attempts_of(k, prompt, gen.texts, gen.logprobs)
                for k, (prompt, gen) in enumerate(zip(prompts, gens, strict=True))]

    def run(batch: Sequence[Attempt]) -> list[Any]:
        results = run_queries([(rows[a.question]["db_path"], a.sql) for a in batch],
                              timeout_s=params.timeout_s, max_rows=params.max_rows, workers=0)
        # only whether rows came back counts from here on: hold one, not thousands per candidate
        return [replace(r, rows=r.rows[:1]) if r.rows else r for r in results]

    def generate(conversations: list[list[dict[str, str]]]) -> list[str]:
        out = generator(conversations, batch_size=params.batch_size,
                        max_new_tokens=params.max_new_tokens, num_samples=1,
                        temperature=params.temperature, seed=params.seed, progress=progress)
        assert out is not None, "one process generates the follow-ups"
        revised.new_tokens += sum(g.new_tokens for g in out)
        return [g.texts[0] for g in out]

    revised.tally.add(revise([a for per in attempts for a in per],
                             rounds=params.revise_rounds, run=run, generate=generate))
    for i, per in zip(indices, attempts, strict=True):
        revised.attempts[i] = per
    revised.seconds += time.perf_counter() - t0


def with_predicted_history(row: dict[str, Any], predicted: dict[tuple[str, int], str]
                           ) -> tuple[list[dict[str, str]], list[str], int]:
    """``row``'s prompt with each earlier turn's SQL replaced by the model's own answer,
    the SQL each earlier turn now shows, and how many kept their gold SQL.

    The prompt's assistant messages are the turns listed in ``row["history"]``; a turn
    with no prediction (left out of the evaluation split) keeps its gold SQL.
    """
    messages = [dict(m) for m in row["prompt"]]
    answers = [m for m in messages if m["role"] == "assistant"]
    history = row.get("history") or []
    if len(answers) != len(history):
        raise DataError(f"example {row['id']!r}: its prompt has {len(answers)} earlier answers "
                        f"but its history lists {len(history)} turns; rerun the prepare stage")
    gold = 0
    for message, turn in zip(answers, history, strict=True):
        sql = predicted.get((str(row["conversation"]), int(turn["turn"])))
        if sql is None:
            gold += 1
        else:
            message["content"] = sql
    return messages, [m["content"] for m in answers], gold


def _generate_turn_by_turn(generator: Callable[..., list[Any]], rows: Sequence[dict[str, Any]],
                           params: InferParams, revised: Revised | None, *, progress: bool
                           ) -> tuple[list[Any], list[list[str] | None], int]:
    """Generate turn 0 of every conversation, then turn 1 with those answers, and so on;
    also the SQL each prompt showed, and how many prompts kept some gold SQL. With
    ``revised``, each turn's answers are revised before the next turn shows them."""
    from text2sql.runtime.distributed import rank_and_size

    if params.num_samples > 1:
        raise DataError("infer.history=predicted with infer.num_samples > 1 is not supported: "
                        "set infer.num_samples=1, or infer.history=gold")
    if rank_and_size()[1] > 1:
        raise DataError("infer.history=predicted answers the turns in order, in one process: "
                        "set infer.num_processes=1, or infer.history=gold")
    gens: list[Any] = [None] * len(rows)
    used: list[list[str] | None] = [None] * len(rows)
    predicted: dict[tuple[str, int], str] = {}
    with_gold = 0
    for turn in sorted({int(r.get("turn", 0)) for r in rows}):
        batch = [i for i, r in enumerate(rows) if int(r.get("turn", 0)) == turn]
        prompts = []
        for i in batch:
            if "turn" in rows[i]:
                prompt, used[i], gold = with_predicted_history(rows[i], predicted)
                with_gold += gold > 0
            else:
                prompt = rows[i]["prompt"]
            prompts.append(prompt)
        out = generator(prompts, batch_size=params.batch_size,
                        max_new_tokens=params.max_new_tokens, num_samples=1,
                        temperature=params.temperature, seed=params.seed, progress=progress)
        if revised is not None:
            _revise(generator, [rows[i] for i in batch], prompts, out, params, revised, batch,
                    progress=progress)
        for i, gen in zip(batch, out, strict=True):
            gens[i] = gen
            if "turn" in rows[i]:
                sql = revised.of(i)[0].sql if revised is not None else extract_sql(gen.texts[0])
                predicted[(str(rows[i]["conversation"]), turn)] = sql
    return gens, used, with_gold


def generate_shared(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]]], *,
                    batch_size: int, max_new_tokens: int, num_samples: int, temperature: float,
                    seed: int, progress: bool = True) -> list[Any] | None:
    """:func:`text2sql.inference.hf.generate` for every prompt, shared out over the processes.

    Process k of N runs batches k, k + N, ... of the one-process plan
    (:func:`text2sql.inference.hf.batch_plan`), so every batch, padding included, is the one
    a single process runs: greedy answers are the same, bit for bit. Process 0 gathers
    them in input order; the others get None. Sampling draws from each process's own
    random stream (seeded with ``seed``): reproducible for the same number of processes.
    """
    from text2sql.inference.hf import batch_plan, generate, prompt_lengths, render_prompts
    from text2sql.runtime.distributed import gather_to_main, rank_and_size

    rank, size = rank_and_size()
    settings = dict(batch_size=batch_size, max_new_tokens=max_new_tokens,
                    num_samples=num_samples, temperature=temperature, seed=seed,
                    progress=progress and rank == 0)
    if size == 1:
        return generate(model, tokenizer, prompts, **settings)
    plan = batch_plan(prompt_lengths(tokenizer, render_prompts(tokenizer, prompts)),
                      batch_size, num_samples)
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
              params: InferParams, revised: Revised | None, *, progress: bool
              ) -> dict[str, float]:
    """Replace each record's greedy-slot answer with the self-consistent choice (among the
    revised candidates, with ``revised``).

    The candidates run in worker processes (:func:`text2sql.inference.voting.choose_all`):
    a candidate that exhausts memory or hangs costs a vote, not the stage.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    questions = []
    for k, (row, gen) in enumerate(zip(rows, gens, strict=True)):
        db = row.get("db_path")
        if not db:
            raise DataError(f"example {row['id']!r}: db_path is empty; infer.num_samples > 1 "
                            "needs the example's SQLite file")
        questions.append((db, [Candidate(raw, extract_sql(raw), lp)
                               for raw, lp in zip(gen.texts, gen.logprobs, strict=True)]
                          if revised is None else
                          [Candidate(a.raw, a.sql, a.logprob) for a in revised.of(k)]))
    with tqdm(total=len(questions), desc="vote", unit="question", disable=not progress) as bar:
        results = choose_all(questions, timeout_s=params.timeout_s, max_rows=params.max_rows,
                             prefer_nonempty=params.prefer_nonempty,
                             on_result=lambda i, v: bar.update())
    valid, all_failed, votes = 0, 0, 0
    for k, ((_, candidates), rec, result) in enumerate(zip(questions, records, results,
                                                           strict=True)):
        best = candidates[result.chosen]
        rec.update(raw=best.raw, sql=best.sql, votes=result.votes,
                   valid_candidates=result.valid,
                   candidates=[{"raw": c.raw, "sql": c.sql, "logprob": round(c.logprob, 4),
                                "error": err}
                               for c, err in zip(candidates, result.errors, strict=True)])
        if revised is not None:
            rec.update(revised.record(revised.of(k)[result.chosen]))
            for entry, attempt in zip(rec["candidates"], revised.of(k), strict=True):
                entry["revised"] = attempt.rounds
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
