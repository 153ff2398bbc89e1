"""Self-correction (``infer.revise_rounds``, ``--revise-rounds``): a candidate whose SQL fails or
returns no rows is asked again with the database's error in a follow-up turn.

The loop is tested with a scripted stand-in for the model (it answers follow-ups from a list
and remembers what it was asked) on the real sample databases and the real read-only runner;
then once end to end with the built-in tiny model through the infer stage and ``ask``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO, SCHOOL
from text2sql.ask.database import open_database
from text2sql.ask.pipeline import answer_question
from text2sql.commands.ask import show_revisions
from text2sql.inference.predict import predict_with_generator
from text2sql.inference.revision import NO_ROWS, Attempt, revise
from text2sql.io import DataError
from text2sql.params import InferParams, PrepareParams, load_params, parse_section
from text2sql.serve.answers import answer_body
from text2sql.sql.sqlite import run_queries

BAD_COLUMN = "SELECT nme FROM students"
NO_MATCH = "SELECT name FROM students WHERE year = 99"
GOOD = "SELECT name FROM students WHERE year = 2"
COUNT = "SELECT count(*) FROM students"


def sqlite_error(sql: str, db: Path = SCHOOL) -> str:
    """SQLite's own message for ``sql`` (straight from sqlite3, not from the runner)."""
    with sqlite3.connect(db) as conn:
        try:
            conn.execute(sql).fetchall()
        except sqlite3.Error as e:
            return str(e)
    raise AssertionError(f"{sql!r} runs")


def rows_of(sql: str, db: Path = SCHOOL) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


class Script:
    """Follow-up answers, in order, from a list; every batch it was asked is kept."""

    def __init__(self, *answers: str):
        self.answers = list(answers)
        self.batches: list[list[list[dict[str, str]]]] = []

    def __call__(self, prompts: list[list[dict[str, str]]]) -> list[str]:
        self.batches.append(prompts)
        if len(self.answers) < len(prompts):
            raise AssertionError(f"asked {len(prompts)} follow-ups, {len(self.answers)} left")
        out, self.answers = self.answers[:len(prompts)], self.answers[len(prompts):]
        return out


def run_on_school(batch):
    return run_queries([(SCHOOL, a.sql) for a in batch], timeout_s=5.0, max_rows=100)


def attempt(sql: str) -> Attempt:
    prompt = [{"role": "system", "content": "You translate questions into SQLite queries."},
              {"role": "user", "content": "Question: Which students are in year 2?"}]
    return Attempt(0, prompt, sql, sql, -1.0)


def test_the_follow_up_turn_carries_sqlites_own_error():
    script = Script(GOOD)
    [a] = attempts = [attempt(BAD_COLUMN)]
    tally = revise(attempts, rounds=2, run=run_on_school, generate=script)
    [[follow_up]] = script.batches
    assert [m["role"] for m in follow_up] == ["system", "user", "assistant", "user"]
    assert follow_up[2]["content"] == BAD_COLUMN
    assert sqlite_error(BAD_COLUMN) in follow_up[3]["content"]  # "no such column: nme"
    assert a.sql == GOOD and a.result.rows == rows_of(GOOD) and a.rounds == 1
    assert [(f.sql, f.outcome) for f in a.earlier] == [(BAD_COLUMN, "unknown_column")]
    assert a.messages == follow_up  # the conversation that wrote the answer it has now
    assert (tally.asked, tally.ran, tally.with_rows) == ([1], [1], [1])


def test_an_empty_result_is_asked_again():
    script = Script(GOOD)
    [a] = attempts = [attempt(NO_MATCH)]
    revise(attempts, rounds=1, run=run_on_school, generate=script)
    assert "returned no rows" in script.batches[0][0][-1]["content"]
    assert a.earlier[0].outcome == NO_ROWS and a.sql == GOOD


def test_rounds_stop_at_n():
    script = Script("SELECT nope FROM students", "SELECT nope2 FROM students", GOOD)
    [a] = attempts = [attempt(BAD_COLUMN)]
    tally = revise(attempts, rounds=2, run=run_on_school, generate=script)
    assert len(script.batches) == 2 and a.rounds == 2 and script.answers == [GOOD]
    assert a.sql == "SELECT nope2 FROM students" and a.result.error == "unknown_column"
    # the second follow-up holds the whole conversation: both answers and both errors
    second = script.batches[1][0]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user", "assistant",
                                          "user"]
    assert sqlite_error("SELECT nope FROM students") in second[-1]["content"]
    assert (tally.asked, tally.ran) == ([1, 1], [0, 0])


def test_rounds_stop_when_the_sql_runs_and_a_round_is_one_batch():
    script = Script(GOOD, "SELECT nope FROM students", GOOD)
    attempts = [attempt(BAD_COLUMN), attempt(COUNT), attempt(NO_MATCH)]
    tally = revise(attempts, rounds=3, run=run_on_school, generate=script)
    # round 1: the two that need it, together; round 2: the one still failing
    assert [len(batch) for batch in script.batches] == [2, 1]
    assert [a.rounds for a in attempts] == [1, 0, 2]
    assert [a.sql for a in attempts] == [GOOD, COUNT, GOOD]
    assert (tally.asked, tally.ran, tally.with_rows) == ([2, 1], [1, 1], [1, 1])


def test_a_failing_revision_does_not_replace_an_answer_that_ran():
    script = Script(BAD_COLUMN)
    [a] = attempts = [attempt(NO_MATCH)]
    tally = revise(attempts, rounds=1, run=run_on_school, generate=script)
    assert (tally.asked, tally.ran) == ([1], [0])  # the round's own answer failed
    assert a.sql == a.raw == NO_MATCH and a.result.ok and a.result.rows == []
    assert a.messages == attempt(NO_MATCH).messages  # the conversation that wrote it
    assert (a.discarded.sql, a.discarded.outcome) == (BAD_COLUMN, "unknown_column")
    assert a.discarded.message == sqlite_error(BAD_COLUMN)
    assert [(f.sql, f.outcome) for f in a.earlier] == [(NO_MATCH, NO_ROWS)] and a.rounds == 1


def test_the_latest_answer_that_ran_stands():
    nope = "SELECT nope FROM students"
    script = Script(NO_MATCH, nope)
    [a] = attempts = [attempt(BAD_COLUMN)]
    revise(attempts, rounds=2, run=run_on_school, generate=script)
    [_, second] = script.batches
    assert a.sql == NO_MATCH and a.result.ok and a.rounds == 2
    assert a.messages == second[0][:-2]  # the first follow-up's conversation wrote NO_MATCH
    assert a.discarded.sql == nope
    assert [f.sql for f in a.earlier] == [BAD_COLUMN, NO_MATCH]
    # and with no earlier answer that ran, the last one stands, nothing set aside
    [b] = attempts = [attempt(BAD_COLUMN)]
    revise(attempts, rounds=1, run=run_on_school, generate=Script(nope))
    assert b.sql == nope and b.discarded is None


def test_the_same_query_again_stands():
    script = Script(NO_MATCH)
    [a] = attempts = [attempt(NO_MATCH)]
    revise(attempts, rounds=3, run=run_on_school, generate=script)
    assert len(script.batches) == 1 and a.rounds == 1 and a.sql == NO_MATCH


# --- the infer core, with a scripted backend -------------------------------------------


@dataclass
class Gen:
    texts: list[str]
    logprobs: list[float] = field(default_factory=list)
    seconds: float = 0.01
    new_tokens: int = 3


class Backend:
    """A stand-in for ``load_generator``'s generator: first answers per question (by its
    question text), then follow-up answers from a list; every call is kept."""

    def __init__(self, first: dict[str, list[str]], follow_ups: list[str],
                 logprobs: list[float] | None = None):
        self.first, self.follow_ups, self.logprobs = first, list(follow_ups), logprobs
        self.calls: list[tuple[list, int]] = []

    def __call__(self, prompts, *, batch_size, max_new_tokens, num_samples, temperature, seed,
                 progress=True):
        self.calls.append((prompts, num_samples))
        out = []
        for prompt in prompts:
            if prompt[-1]["content"].startswith("Schema:"):  # a question's first prompt
                question = prompt[-1]["content"].rsplit("Question: ", 1)[1]
                texts = self.first[question]
                assert len(texts) == num_samples
                out.append(Gen(texts, self.logprobs or [-1.0] * len(texts)))
            else:
                assert num_samples == 1, "follow-ups are answered greedily"
                out.append(Gen([self.follow_ups.pop(0)]))
        return out


@pytest.fixture(scope="module")
def school_rows(prepared_rows):
    rows = [r for r in prepared_rows["eval"] + prepared_rows["train"]
            if r["db_id"] == "school"][:2]
    assert len(rows) == 2 and all(Path(r["db_path"]).is_file() for r in rows)
    return rows


def test_infer_revises_failing_candidates_and_counts_them(school_rows):
    first, second = school_rows
    backend = Backend({first["question"]: [BAD_COLUMN], second["question"]: [COUNT]}, [GOOD])
    params = InferParams(revise_rounds=2)
    records, metrics = predict_with_generator(backend, school_rows, params, progress=False)
    assert [len(prompts) for prompts, _ in backend.calls] == [2, 1]
    assert sqlite_error(BAD_COLUMN) in backend.calls[1][0][0][-1]["content"]
    assert records[0]["sql"] == GOOD and records[0]["raw"] == GOOD
    assert records[0]["revised"] == 1
    assert records[0]["revisions"] == [{"sql": BAD_COLUMN, "outcome": "unknown_column",
                                        "message": sqlite_error(BAD_COLUMN)}]
    assert records[1]["sql"] == COUNT and records[1]["revised"] == 0
    assert records[1]["revisions"] == []
    assert {k: metrics[k] for k in ("revise_rounds", "revised", "revised_ran",
                                    "revised_with_rows", "revised_round_1", "ran_round_1",
                                    "revised_round_2", "ran_round_2", "revised_kept_earlier",
                                    "revise_generated_tokens")} == {
        "revise_rounds": 2, "revised": 1, "revised_ran": 1, "revised_with_rows": 1,
        "revised_kept_earlier": 0,
        "revised_round_1": 1, "ran_round_1": 1, "revised_round_2": 0, "ran_round_2": 0,
        "revise_generated_tokens": 3}
    assert metrics["generated_tokens"] == 6  # the first answers only, as without revision


def test_infer_keeps_the_answer_that_ran_and_records_the_one_set_aside(school_rows):
    first, second = school_rows
    backend = Backend({first["question"]: [NO_MATCH], second["question"]: [COUNT]},
                      [BAD_COLUMN])
    records, metrics = predict_with_generator(backend, school_rows,
                                              InferParams(revise_rounds=1), progress=False)
    assert records[0]["sql"] == records[0]["raw"] == NO_MATCH and records[0]["revised"] == 1
    assert records[0]["revisions"] == [{"sql": NO_MATCH, "outcome": NO_ROWS, "message": ""}]
    assert records[0]["discarded"] == {"sql": BAD_COLUMN, "outcome": "unknown_column",
                                       "message": sqlite_error(BAD_COLUMN)}
    assert "discarded" not in records[1]
    assert (metrics["revised"], metrics["revised_ran"], metrics["revised_with_rows"],
            metrics["revised_kept_earlier"], metrics["ran_round_1"]) == (1, 1, 0, 1, 0)


def test_without_rounds_nothing_changes(school_rows):
    first, second = school_rows
    backend = Backend({first["question"]: [BAD_COLUMN], second["question"]: [COUNT]}, [GOOD])
    records, metrics = predict_with_generator(backend, school_rows, InferParams(),
                                              progress=False)
    assert len(backend.calls) == 1 and backend.follow_ups == [GOOD]
    assert [r["sql"] for r in records] == [BAD_COLUMN, COUNT]
    assert not any("revise" in k or "revised" in k for k in metrics)
    assert all("revised" not in r and "revisions" not in r for r in records)


def test_with_several_samples_revision_comes_before_the_vote(school_rows):
    first = school_rows[0]
    year_2 = "SELECT count(*) FROM students WHERE year = 2"
    samples = [year_2, BAD_COLUMN, "SELECT nope FROM students"]
    # Without revision year_2 wins alone; revised, the two failures agree on COUNT.
    backend = Backend({first["question"]: samples}, [COUNT, COUNT], logprobs=[-1.0, -2.0, -3.0])
    params = InferParams(num_samples=3, temperature=1.0, revise_rounds=1)
    [record], metrics = predict_with_generator(backend, [first], params, progress=False)
    assert [len(prompts) for prompts, _ in backend.calls] == [1, 2]  # both in one batch
    assert record["sql"] == COUNT and record["votes"] == 2 and record["valid_candidates"] == 3
    assert [c["sql"] for c in record["candidates"]] == [year_2, COUNT, COUNT]
    assert [c["revised"] for c in record["candidates"]] == [0, 1, 1]
    assert record["revised"] == 1 and record["revisions"][0]["outcome"] == "unknown_column"
    assert metrics["revised"] == 2 and metrics["revised_ran"] == 2
    assert metrics["mean_winning_votes"] == 2

    unrevised = Backend({first["question"]: samples}, [], logprobs=[-1.0, -2.0, -3.0])
    [record], _ = predict_with_generator(unrevised, [first], params.model_copy(
        update={"revise_rounds": 0}), progress=False)
    assert record["sql"] == year_2 and record["votes"] == 1


def test_a_conversations_next_turn_shows_the_revised_sql():
    system = {"role": "system", "content": "You translate questions into SQLite queries."}
    first = [system, {"role": "user", "content": "Schema: ...\n\nQuestion: Year 2?"}]
    rows = [{"id": "c-0", "db_id": "school", "question": "Year 2?", "db_path": str(SCHOOL),
             "conversation": "c", "turn": 0, "history": [], "prompt": first},
            {"id": "c-1", "db_id": "school", "question": "How many?", "db_path": str(SCHOOL),
             "conversation": "c", "turn": 1, "history": [{"turn": 0}],
             "prompt": [*first, {"role": "assistant", "content": "SELECT gold FROM students"},
                        {"role": "user", "content": "Question: How many?"}]}]
    asked: list[list[dict[str, str]]] = []

    def backend(prompts, *, num_samples, **settings):
        asked.extend(prompts)
        answers = {"Question: Year 2?": BAD_COLUMN, "Question: How many?": COUNT}
        return [Gen([next((sql for end, sql in answers.items()
                           if p[-1]["content"].endswith(end)), GOOD)]) for p in prompts]

    params = InferParams(history="predicted", revise_rounds=1)
    records, metrics = predict_with_generator(backend, rows, params, progress=False)
    assert records[0]["sql"] == GOOD and records[0]["revised"] == 1
    assert records[1]["history_sql"] == [GOOD]  # the revised answer, not BAD_COLUMN
    assert asked[-1][2]["content"] == GOOD and metrics["revised"] == 1


def test_revise_rounds_is_checked_and_off_by_default(tmp_path):
    with pytest.raises(DataError, match=r"infer\.revise_rounds: .*greater than or equal to 0"):
        parse_section(InferParams, {"revise_rounds": -1}, "infer")
    with pytest.raises(DataError, match=r"infer\.revise_rounds"):
        parse_section(InferParams, {"revise_rounds": "twice"}, "infer")
    assert load_params("infer", REPO / "params.yaml").revise_rounds == 0
    spec = importlib.util.spec_from_file_location("infer_stage", REPO / "stages/infer.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    with pytest.raises(DataError, match="infer.num_processes=1, or infer.revise_rounds=0"):
        stage.main(InferParams(revise_rounds=1, num_processes=2))  # before any process starts


# --- the answer pipeline of ask, chat, serve and mcp -----------------------------------


class Writer:
    """A stand-in for a face's ``generate(prompts, num_samples)``: first answers, then
    follow-up answers, in order; every batch is kept."""

    def __init__(self, first: list[str], follow_ups: list[str]):
        self.first, self.follow_ups = first, list(follow_ups)
        self.batches: list[tuple[list, int]] = []

    def __call__(self, prompts, num_samples):
        self.batches.append((prompts, num_samples))
        if not self.batches[1:]:
            return [Gen(self.first[:num_samples], [-1.0 - k for k in range(num_samples)])]
        return [Gen([self.follow_ups.pop(0)]) for _ in prompts]


def test_the_ask_pipeline_revises_and_says_so():
    db = open_database(SCHOOL)
    writer = Writer([BAD_COLUMN], [GOOD])
    answer = answer_question("Which students are in year 2?", db, db.schema(), writer,
                             settings=PrepareParams(), revise_rounds=1)
    assert answer.sql == GOOD and answer.ok and answer.rows == rows_of(GOOD)
    assert [(r.sql, r.outcome, r.message) for r in answer.revisions] == [
        (BAD_COLUMN, "unknown_column", sqlite_error(BAD_COLUMN))]
    follow_up = writer.batches[1][0][0]
    assert follow_up[:-2] == writer.batches[0][0][0]  # the question's own prompt, then more
    assert sqlite_error(BAD_COLUMN) in follow_up[-1]["content"]
    body = answer_body(answer, None)
    assert body["revisions"] == [{"sql": BAD_COLUMN, "outcome": "unknown_column",
                                  "error": sqlite_error(BAD_COLUMN)}]

    assert body["discarded"] is None

    back = Writer([NO_MATCH], [BAD_COLUMN])
    answer = answer_question("Which students are in year 2?", db, db.schema(), back,
                             settings=PrepareParams(), revise_rounds=1)
    assert answer.sql == NO_MATCH and answer.ok and answer.rows == []
    assert answer.discarded.sql == BAD_COLUMN
    assert answer_body(answer, None)["discarded"] == {
        "sql": BAD_COLUMN, "outcome": "unknown_column", "error": sqlite_error(BAD_COLUMN)}
    shown = io.StringIO()
    show_revisions(answer, shown)
    assert "revision 1: asked again after\n  " + NO_MATCH + "\n  -> no rows" in shown.getvalue()
    assert "set aside: the last revision failed" in shown.getvalue()
    assert BAD_COLUMN in shown.getvalue() and "[unknown_column]" in shown.getvalue()

    kept = Writer([BAD_COLUMN], [GOOD])
    answer = answer_question("Which students are in year 2?", db, db.schema(), kept,
                             settings=PrepareParams())
    assert answer.sql == BAD_COLUMN and answer.revisions == [] and len(kept.batches) == 1


def test_the_ask_pipeline_revises_every_sample_before_the_vote():
    db = open_database(SCHOOL)
    year_2 = "SELECT count(*) FROM students WHERE year = 2"
    writer = Writer([year_2, BAD_COLUMN, NO_MATCH], [COUNT, COUNT])
    answer = answer_question("How many students are there?", db, db.schema(), writer,
                             settings=PrepareParams(), num_samples=3, revise_rounds=1)
    assert [(len(prompts), n) for prompts, n in writer.batches] == [(1, 3), (2, 1)]
    assert answer.sql == COUNT and answer.vote.votes == 2 and answer.rows == rows_of(COUNT)


# --- end to end, with the built-in tiny model ---------------------------------------------


@pytest.fixture(scope="module")
def untrained_adapter(tmp_path_factory, prepared_rows) -> Path:
    """A built-in-size model with random weights and a random LoRA adapter: it writes
    nonsense, so its SQL fails and is asked again (no training: this takes seconds)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from text2sql.modeling.tiny import BASE_MODEL_DIR, build_tiny_model
    from text2sql.training.sft import training_texts

    adapter = tmp_path_factory.mktemp("untrained")
    base = build_tiny_model(training_texts(prepared_rows["train"][:100]),
                            adapter / BASE_MODEL_DIR, seed=3, hidden_size=64,
                            intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=600)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    config_file = adapter / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "base_model_name_or_path": "builtin:tiny-qwen2"}))
    return adapter


def test_infer_stage_with_revision_end_to_end(tmp_path, monkeypatch, untrained_adapter,
                                              school_rows):
    from text2sql.io import iter_jsonl, write_jsonl
    from text2sql.sql.sqlite import run_query

    write_jsonl(tmp_path / "data/prepared/eval.jsonl", school_rows)
    shutil.copytree(untrained_adapter, tmp_path / "models/aligned")
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("infer_stage", REPO / "stages/infer.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    stage.main(InferParams(batch_size=4, max_new_tokens=8, revise_rounds=1))
    records = list(r for _, r in iter_jsonl(tmp_path / "data/predictions/eval.jsonl"))
    metrics = json.loads((tmp_path / "metrics/infer.json").read_text())
    assert len(records) == 2 and metrics["revise_rounds"] == 1
    for record, row in zip(records, school_rows, strict=True):
        first = record["revisions"][0]["sql"] if record["revised"] else record["sql"]
        result = run_query(row["db_path"], first)
        # asked again exactly when its first SQL failed or returned nothing
        assert bool(record["revised"]) == (not result.ok or not result.rows), (record, result)
    assert metrics["revised"] == sum(r["revised"] > 0 for r in records) > 0
    assert metrics["revised_round_1"] == metrics["revised"]
    assert metrics["revised_ran"] == metrics["ran_round_1"]
    assert metrics["revise_generated_tokens"] > 0
    runtime = json.loads((tmp_path / "metrics/runtime/infer.json").read_text())
    assert runtime["revise_s"] >= 0


def test_ask_with_revision_end_to_end(untrained_adapter, capsys, tmp_path):
    from text2sql.cli import main

    code = main(["ask", "--db", str(SCHOOL), "--adapter", str(untrained_adapter),
                 "--params", str(tmp_path / "none.yaml"), "--max-new-tokens", "8",
                 "--revise-rounds", "1", "Which students are in year 2?"])
    out = capsys.readouterr().out
    assert "revision 1: asked again after" in out, out
    assert code in (0, 1, 3)
    with pytest.raises(SystemExit) as exit_:
        main(["ask", "--db", str(SCHOOL), "--revise-rounds", "-1", "Which students?"])
    assert exit_.value.code == 2
    assert "--revise-rounds: '-1': give 0 or more rounds" in capsys.readouterr().err


def test_chat_with_revision_end_to_end(untrained_adapter, monkeypatch, capsys):
    import os
    import sys

    from text2sql.cli import main

    read, write = os.pipe()
    os.write(write, b"Which students are in year 2?\nHow many is that?\n")
    os.close(write)
    with os.fdopen(read) as pipe:
        monkeypatch.setattr(sys, "stdin", pipe)
        code = main(["chat", "--db", str(SCHOOL), "--adapter", str(untrained_adapter),
                     "--params", "/nonexistent.yaml", "--max-new-tokens", "8",
                     "--revise-rounds", "1"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("revision 1: asked again after") == 2, out


def test_serve_with_revision_end_to_end(untrained_adapter, sample_dir, tmp_path):
    from tests.test_serve import start_server

    databases = tmp_path / "database"
    shutil.copytree(sample_dir / "database", databases)
    params = tmp_path / "params.yaml"
    params.write_text("infer:\n  max_new_tokens: 8\n")
    srv = start_server(databases, ["--adapter", str(untrained_adapter), "--params", str(params),
                                   "--revise-rounds", "1"], REPO)
    try:
        status, body = srv.post("/v1/sql", {"db": "school",
                                            "question": "Which students are in year 2?"})
        assert status == 200, body
        [earlier] = body["revisions"]  # the nonsense it wrote first, asked again once
        first_prompt = body["usage"]["prompt_tokens"]
        assert earlier["outcome"] in ("no_rows", "empty_prediction", "parse_error",
                                      "unknown_column", "unknown_table", "execution_error")
        status, body = srv.post("/v1/sql", {"db": "school", "num_samples": 2,
                                            "question": "How many students are there?"})
        assert status == 200 and body["vote"]["samples"] == 2, body
        assert len(body["revisions"]) <= 1
        # the follow-up's prompt holds the question's prompt: its tokens are counted too
        status, plain = srv.post("/v1/sql", {"db": "school", "execute": False,
                                             "question": "Which students are in year 2?"})
        assert plain["revisions"] == [] and plain["usage"]["prompt_tokens"] * 2 < first_prompt
    finally:
        srv.proc.terminate()
        srv.proc.wait(timeout=30)
