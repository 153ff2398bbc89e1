"""Multi-turn text-to-SQL: SParC/CoSQL and JSONL-history loaders, conversation prompts,
history trimming, whole-conversation linking, both history modes, conversation metrics,
and single-turn prompts kept byte for byte."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

from text2sql.data.prepare import (
    PrepareStats,
    load_splits,
    prepare_examples,
    prepare_in_memory,
    prompt_options,
)
from text2sql.data.prompts import PromptOptions, make_prompt, trim_history
from text2sql.data.sources import (
    Turn,
    load_dataset_splits,
    load_jsonl_split,
    load_sparc_split,
    open_databases,
)
from text2sql.evaluation.scoring import (
    CORRECT,
    GOLD_ERROR,
    WRONG_RESULT,
    Scored,
    conversation_metrics,
    render_report,
    summarize,
)
from text2sql.io import DataError, write_jsonl
from text2sql.params import InferParams, PrepareParams, load_params, parse_section

REPO = Path(__file__).resolve().parents[1]
SPARC = REPO / "data" / "sample-sparc"

YEAR = "SELECT name FROM students WHERE year = 2"
CITY = YEAR + " AND city = 'Avonlea'"
COUNT = "SELECT count(*) FROM students WHERE year = 2 AND city = 'Avonlea'"


def conversation(db="school", turns=(("Which students are in year 2?", YEAR),
                                     ("Only those from Avonlea.", CITY),
                                     ("How many is that?", COUNT))):
    return {"database_id": db, "interaction": [{"utterance": q, "query": s} for q, s in turns],
            "final": {"utterance": "", "query": turns[-1][1]}}


@pytest.fixture()
def sparc_dir(tmp_path):
    """A SParC-layout folder on the sample databases: one good conversation, three bad."""
    root = tmp_path / "sparc"
    shutil.copytree(SPARC / "database", root / "database")
    shutil.copy(SPARC / "tables.json", root / "tables.json")
    dev = [conversation(),
           conversation(turns=(("Which students are in year 2?", YEAR), ("And Avonlea?", ""))),
           conversation(db="no_such_db"),
           {"database_id": "school", "interaction": []}]
    (root / "dev.json").write_text(json.dumps(dev))
    (root / "train.json").write_text(json.dumps([conversation()] * 2))
    return root


def test_sparc_layout_one_example_per_turn_and_bad_conversations_named(sparc_dir):
    ds = load_sparc_split(sparc_dir, "dev")
    assert [e.id for e in ds.examples] == ["dev-00000-00", "dev-00000-01", "dev-00000-02"]
    last = ds.examples[2]
    assert (last.conversation, last.turn, last.question) == ("dev-00000", 2, "How many is that?")
    assert last.history == (Turn("Which students are in year 2?", YEAR),
                            Turn("Only those from Avonlea.", CITY))
    assert last.db_path.endswith("school/school.sqlite")
    assert [(b.conversation, b.turn, b.reason, b.turns) for b in ds.bad] == [
        ("1", 1, "missing_query", 2), ("2", None, "unknown_database", 3),
        ("3", None, "bad_interaction", 0)]
    message = ds.bad[0].message()
    assert f"{sparc_dir / 'dev.json'}: conversation 1, turn 1: missing_query" in message
    assert "'no_such_db'" in ds.bad[1].detail


def test_cosql_layout_is_read_too(sparc_dir):
    cosql = sparc_dir.parent / "cosql"
    shutil.copytree(sparc_dir, cosql)
    (cosql / "sql_state_tracking").mkdir()
    (cosql / "dev.json").rename(cosql / "sql_state_tracking" / "cosql_dev.json")
    (cosql / "train.json").rename(cosql / "sql_state_tracking" / "cosql_train.json")
    train, evals = load_dataset_splits("sparc", str(cosql), "train", "dev", 0.1, 0)
    assert len(train.examples) == 6 and len(evals.examples) == 3 and len(evals.bad) == 3
    with pytest.raises(DataError, match=r"cosql_train.json"):
        load_dataset_splits("sparc", str(sparc_dir / "database"), "train", "dev", 0.1, 0)


def test_jsonl_history_lines_and_bad_history(tmp_path):
    f = tmp_path / "dev.jsonl"
    lines = [{"question": "Which students are in year 2?", "query": YEAR, "db_id": "school"},
             {"question": "How many is that?", "query": COUNT, "db_id": "school",
              "conversation": "c1", "history": [{"question": "Which students are in year 2?",
                                                 "query": YEAR}]},
             {"question": "Count them.", "query": COUNT, "db_id": "school",
              "history": [{"question": "Which students?"}]}]
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    ds = load_jsonl_split(f, "dev", open_databases(SPARC / "tables.json", SPARC / "database"))
    examples = list(ds.examples)
    assert examples[0].turn is None and examples[0].history == ()
    assert (examples[1].conversation, examples[1].turn) == ("c1", 1)
    assert examples[1].history == (Turn("Which students are in year 2?", YEAR),)
    assert len(examples) == 2 and [(b.where, b.turn, b.reason) for b in ds.bad] == [
        (f"{f}:3", 0, "missing_query")]
    list(ds.examples)  # read again: the bad lines are listed once, not twice
    assert len(ds.bad) == 1


def load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_stage_counts_and_lists_dropped_conversations(tmp_path, monkeypatch, sparc_dir):
    monkeypatch.chdir(tmp_path)
    load_stage("prepare").main(parse_section(PrepareParams, {"source": "sparc",
                                                             "path": str(sparc_dir)}, "prepare"))
    m = json.loads(Path("metrics/prepare.json").read_text())
    assert m["eval_n"] == 3 and m["eval_conversations"] == 1 and m["eval_follow_ups"] == 2
    assert m["eval_dropped_conversations"] == 3 and m["eval_dropped_conversation_turns"] == 5
    assert m["train_dropped_conversations"] == 0 and m["eval_history_turns_mean"] == 1.5
    dropped = [json.loads(x) for x in Path("data/prepared/dropped.jsonl").read_text().splitlines()]
    assert [d["reason"] for d in dropped] == ["missing_query", "unknown_database",
                                              "bad_interaction"]
    assert "dev.json: conversation 1, turn 1" in dropped[0]["detail"]
    rows = [json.loads(x) for x in Path("data/prepared/eval.jsonl").read_text().splitlines()]
    assert [m["role"] for m in rows[2]["prompt"]] == ["system", "user", "assistant", "user",
                                                      "assistant", "user"]
    assert rows[2]["history"] == [{"turn": 0, "question": "Which students are in year 2?",
                                   "query": YEAR},
                                  {"turn": 1, "question": "Only those from Avonlea.",
                                   "query": CITY}]


def test_trim_history_keeps_the_newest_whole_turns():
    turns = [Turn(f"question {i}", f"SELECT {i}") for i in range(5)]  # 2 + 2 tokens each
    assert trim_history(turns, 2, 100) == turns[3:]
    assert trim_history(turns, 10, 100) == turns
    assert trim_history(turns, 10, 10) == turns[3:]
    assert trim_history(turns, 10, 3) == []  # the newest alone is over budget: none
    assert trim_history(turns, 0, 100) == []


def test_conversation_prompt_and_whole_conversation_linking():
    from text2sql.ask.questions import read_schema

    db = SPARC / "database" / "school" / "school.sqlite"
    schema = read_schema(db)
    history = [Turn("Which students are in year 2?", YEAR)]
    alone = make_prompt("How many is that?", schema, db)
    linked = make_prompt("How many is that?", schema, db, history=history)
    assert alone.full_schema  # the follow-up alone names no table: every table is shown
    assert linked.tables == ["students"] and not linked.full_schema
    assert linked.history_turns == 1
    assert linked.messages[1]["content"].startswith("Schema:\nCREATE TABLE students")
    assert linked.messages[1]["content"].endswith("Question: Which students are in year 2?")
    assert linked.messages[2:] == [{"role": "assistant", "content": YEAR},
                                   {"role": "user", "content": "Question: How many is that?"}]
    none = make_prompt("How many is that?", schema, db, options=PromptOptions(
        max_history_turns=0), history=history)
    assert len(none.messages) == 2 and none.tables == ["students"]  # still linked on it


def _md5_of_rows(rows, path: Path) -> str:
    write_jsonl(path, rows)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_single_turn_prompts_and_metrics_are_byte_identical(tmp_path, monkeypatch):
    """The default pipeline's prepare outputs are those of the committed run (dvc.lock)."""
    monkeypatch.chdir(REPO)  # rows hold db_path as the stage writes it, relative to the repo
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    committed = {d["path"]: d["md5"] for stage in lock["stages"].values()
                 for d in stage.get("deps", []) if d["path"].startswith("data/prepared/")}
    params = load_params("prepare", REPO / "params.yaml")
    train, evals = load_splits(params)
    metrics = {}
    for name, ds in (("train", train), ("eval", evals)):
        stats = PrepareStats()
        rows = list(prepare_examples(ds.examples, ds.schemas, check_gold=params.check_gold,
                                     stats=stats, options=prompt_options(params)))
        stats.drop_conversations(ds.bad)
        assert _md5_of_rows(rows, tmp_path / f"{name}.jsonl") == committed[
            f"data/prepared/{name}.jsonl"], name
        metrics.update(stats.as_metrics(name))
    assert metrics == json.loads((REPO / "metrics" / "prepare.json").read_text())


def test_conversation_metrics_question_interaction_and_turn():
    def scored(i, outcome):
        return Scored(i, "school", "q", "g", "p", outcome, False, True)

    results = [scored("a0", CORRECT), scored("a1", CORRECT), scored("b0", CORRECT),
               scored("b1", WRONG_RESULT), scored("b2", CORRECT), scored("b3", CORRECT),
               scored("b4", CORRECT), scored("c0", GOLD_ERROR)]
    turns = {r.id: (r.id[0], int(r.id[1])) for r in results}
    m = conversation_metrics(results, turns)
    assert m["question_execution_accuracy"] == round(6 / 7, 4)
    assert m["interaction_execution_accuracy"] == 0.5 and m["n_interactions"] == 2
    assert (m["execution_accuracy_turn_1"], m["n_turn_1"]) == (1.0, 2)
    assert (m["execution_accuracy_turn_2"], m["n_turn_2"]) == (0.5, 2)
    assert (m["execution_accuracy_turn_4plus"], m["n_turn_4plus"]) == (1.0, 2)
    report = render_report(results, {**summarize(results), **m})
    assert "| interaction execution accuracy (every turn right) | **50.0%** |" in report
    assert "| 4 and later | 2 | 100.0% |" in report
    assert "interaction" not in render_report(results, summarize(results))  # single-turn


@pytest.fixture(scope="module")
def sparc_eval_rows():
    params = load_params("prepare", REPO / "params.yaml").model_copy(
        update={"source": "sparc", "path": "data/sample-sparc", "max_eval_examples": 7,
                "max_train_examples": 1})
    return prepare_in_memory(params, root=str(REPO))["eval"]


def test_history_gold_and_predicted(tiny_adapter, sparc_eval_rows):
    """gold: the prompts as prepared; predicted: each earlier turn's SQL is the model's own."""
    from text2sql.inference.hf import load_for_inference
    from text2sql.inference.predict import predict_with_model

    model, tokenizer = load_for_inference(tiny_adapter)
    rows = sparc_eval_rows
    assert {r["turn"] for r in rows} >= {0, 1, 2}
    params = InferParams(max_new_tokens=24)
    gold, gm = predict_with_model(model, tokenizer, rows, params, progress=False)
    assert gm["history"] == "gold" and all("history_sql" not in r for r in gold)
    pred, pm = predict_with_model(model, tokenizer, rows,
                                  params.model_copy(update={"history": "predicted"}),
                                  progress=False)
    assert pm["history"] == "predicted" and pm["history_with_gold_turns"] == 0
    sql = {(r["conversation"], r["turn"]): p["sql"] for r, p in zip(rows, pred)}
    for row, p in zip(rows, pred):
        assert p["history_sql"] == [sql[(row["conversation"], h["turn"])] for h in row["history"]]
    first = [i for i, r in enumerate(rows) if r["turn"] == 0]
    assert [pred[i]["sql"] for i in first] == [gold[i]["sql"] for i in first]
    with pytest.raises(DataError, match="num_samples"):
        predict_with_model(model, tokenizer, rows, params.model_copy(
            update={"history": "predicted", "num_samples": 2}), progress=False)


def test_new_params_are_checked():
    with pytest.raises(DataError, match=r"infer.history"):
        parse_section(InferParams, {"history": "oracle"}, "infer")
    with pytest.raises(DataError, match=r"prepare.max_history_turns"):
        parse_section(PrepareParams, {"max_history_turns": -1}, "prepare")
