"""Predicting SQL for prepared examples (the core of the ``infer`` stage)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from text2sql.extract import extract_sql
from text2sql.params import InferParams


def predict(rows: Sequence[dict[str, Any]], adapter_dir: str | Path, params: InferParams
            ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Prediction records (in input order) and throughput metrics."""
    from text2sql.generation import generate, load_for_inference

    model, tokenizer = load_for_inference(adapter_dir)
    start = time.perf_counter()
    gens = generate(model, tokenizer, [r["prompt"] for r in rows], batch_size=params.batch_size,
                    max_new_tokens=params.max_new_tokens, num_samples=params.num_samples,
                    temperature=params.temperature, seed=params.seed)
    wall = time.perf_counter() - start
    out = []
    for row, gen in zip(rows, gens, strict=True):
        raw = gen.texts[0]
        out.append({"id": row["id"], "db_id": row["db_id"], "question": row["question"],
                    "raw": raw, "sql": extract_sql(raw), "seconds": round(gen.seconds, 4)})
    new_tokens = sum(g.new_tokens for g in gens)
    metrics = {
        "n": len(out),
        "sequences_per_s": round(len(out) / wall, 2) if wall else 0.0,
        "generated_tokens_per_s": round(new_tokens / wall, 1) if wall else 0.0,
        "wall_s": round(wall, 2),
    }
    return out, metrics
