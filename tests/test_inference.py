"""The infer core and stage: predictions, throughput metrics, self-consistency end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from text2sql.inference.predict import check_rows, predict, predict_with_model
from text2sql.io import DataError, iter_jsonl, write_jsonl
from text2sql.params import InferParams, load_params

FIELDS = {"id", "db_id", "question", "raw", "sql", "seconds"}


@pytest.fixture(scope="module")
def loaded(tiny_adapter):
    from text2sql.inference.hf import load_for_inference

    return load_for_inference(tiny_adapter)


@pytest.fixture(scope="module")
def eval_rows(prepared_rows):
    return prepared_rows["eval"][:6]


def test_greedy_predictions_and_metrics(loaded, eval_rows):
    model, tok = loaded
    params = InferParams(batch_size=4, max_new_tokens=32)
    records, metrics = predict_with_model(model, tok, eval_rows, params, progress=False)
    assert [r["id"] for r in records] == [r["id"] for r in eval_rows]
    for rec, row in zip(records, eval_rows, strict=True):
        assert set(rec) == FIELDS
        assert (rec["db_id"], rec["question"]) == (row["db_id"], row["question"])
        assert rec["seconds"] > 0
        from text2sql.sql.extract import extract_sql

        assert rec["sql"] == extract_sql(rec["raw"])
    assert metrics["n"] == 6 and metrics["num_samples"] == 1
    assert metrics["sequences_per_s"] > 0 and metrics["generated_tokens_per_s"] > 0
    assert 0 < metrics["generated_tokens"] <= 6 * 32


def test_self_consistency_votes_on_each_examples_database(loaded, eval_rows):
    model, tok = loaded
    params = InferParams(batch_size=8, max_new_tokens=32, num_samples=4, temperature=1.0, seed=1)
    records, metrics = predict_with_model(model, tok, eval_rows, params, progress=False)
    for rec in records:
        cands = rec["candidates"]
        assert len(cands) == 4
        assert rec["sql"] in [c["sql"] for c in cands] and rec["raw"] in [c["raw"] for c in cands]
        ok = [c for c in cands if c["error"] is None]
        assert rec["valid_candidates"] == len(ok)
        assert rec["votes"] <= len(ok)
        if rec["votes"] == 0:  # all failed: the most likely candidate
            assert max(cands, key=lambda c: c["logprob"])["sql"] == rec["sql"]
    assert metrics["num_samples"] == 4
    assert metrics["all_candidates_failed"] == sum(r["votes"] == 0 for r in records)
    assert metrics["mean_valid_candidates"] == pytest.approx(
        sum(r["valid_candidates"] for r in records) / len(records), abs=1e-3)


def test_check_rows_names_file_line_and_field(tmp_path, eval_rows):
    f = tmp_path / "eval.jsonl"
    bad = dict(eval_rows[0])
    del bad["prompt"]
    write_jsonl(f, [eval_rows[1], bad])
    with pytest.raises(DataError, match=r"eval.jsonl:2: missing field 'prompt'"):
        check_rows(iter_jsonl(f), f, need_db=False)
    write_jsonl(f, [{**eval_rows[0], "db_path": None}])
    assert len(check_rows(iter_jsonl(f), f, need_db=False)) == 1
    with pytest.raises(DataError, match=r"eval.jsonl:1: db_path is empty.*num_samples=1"):
        check_rows(iter_jsonl(f), f, need_db=True)
    write_jsonl(f, [])
    with pytest.raises(DataError, match="no examples"):
        check_rows(iter_jsonl(f), f, need_db=False)


def test_infer_params_reject_unknown_keys_and_bad_values(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("infer:\n  num_sample: 5\n")
    with pytest.raises(DataError, match="unknown key 'infer.num_sample'"):
        load_params("infer", f)
    f.write_text("infer:\n  num_samples: 0\n")
    with pytest.raises(DataError, match="infer.num_samples"):
        load_params("infer", f)
    f.write_text("infer:\n  temperature: warm\n")
    with pytest.raises(DataError, match="infer.temperature"):
        load_params("infer", f)


def test_infer_stage_writes_declared_outputs(tmp_path, monkeypatch, tiny_adapter, eval_rows,
                                             repo_root):
    """stages/infer.py in a scratch working directory, as `dvc repro infer` runs it."""
    import importlib.util

    write_jsonl(tmp_path / "data/prepared/eval.jsonl", eval_rows[:3])
    shutil.copytree(tiny_adapter, tmp_path / "models/aligned")  # the align stage's output
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("infer_stage", repo_root / "stages/infer.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    stage.main(InferParams(batch_size=2, max_new_tokens=16))
    preds = [row for _, row in iter_jsonl(Path("data/predictions/eval.jsonl"))]
    assert [p["id"] for p in preds] == [r["id"] for r in eval_rows[:3]]
    assert all(set(p) == FIELDS - {"seconds"} for p in preds)  # a timing is not a result
    metrics = json.loads(Path("metrics/infer.json").read_text())
    runtime = json.loads(Path("metrics/runtime/infer.json").read_text())
    for key in ("sequences_per_s", "generated_tokens_per_s", "wall_s", "load_s"):
        assert isinstance(runtime[key], int | float) and key not in metrics, key
    assert metrics["n"] == 3
    assert {k: metrics[k] for k in ("base_model", "precision", "load_in_4bit", "adapter_merged")} \
        == {"base_model": "builtin:tiny-qwen2", "precision": "float32", "load_in_4bit": False,
            "adapter_merged": True}
    assert sorted(p.name for p in Path(".").iterdir()) == ["data", "metrics", "models"]


def test_predict_loads_the_adapter(tiny_adapter, eval_rows):
    records, metrics = predict(eval_rows[:2], tiny_adapter,
                               InferParams(batch_size=2, max_new_tokens=8), progress=False)
    assert len(records) == 2 and metrics["load_s"] > 0
