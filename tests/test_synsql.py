"""The SynSQL (OmniSQL) layout as a streamed source, and answers that reason first
(``prepare.answer: reasoning``): preparing them, extracting, voting on and exporting them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from text2sql.data.prepare import PrepareStats, prepare_examples, prepare_in_memory
from text2sql.data.prompts import REASONING_SYSTEM_PROMPT, SYSTEM_PROMPT, reasoning_answer
from text2sql.data.sample import build_synsql_dataset, synsql_cot
from text2sql.data.sources import load_dataset_splits
from text2sql.io import DataError, iter_json_array
from text2sql.params import PrepareParams, parse_section
from text2sql.sql.extract import answer_sql, extract_sql

COT = ("The question asks for the number of doctors, so we count the rows of doctors.\n"
       "A first draft:\n```sql\nSELECT * FROM doctors\n```\nBut only the count is asked for.\n\n"
       "```sql\nSELECT count(*) FROM doctors\n```")


def params(**kw) -> PrepareParams:
    return parse_section(PrepareParams, kw, "prepare")


@pytest.fixture(scope="module")
def synsql(tmp_path_factory) -> Path:
    """400 examples in the SynSQL-2.5M layout over the sample's four databases."""
    return build_synsql_dataset(tmp_path_factory.mktemp("synsql") / "SynSQL", 400)


def write_examples(folder: Path, synsql: Path, rows: list, raw: str | None = None) -> Path:
    """A SynSQL folder holding ``rows`` (or the text ``raw``) as its data.json."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(synsql / "tables.json", folder / "tables.json")
    if not (folder / "databases").exists():
        (folder / "databases").symlink_to(synsql / "databases")
    (folder / "data.json").write_text(raw if raw is not None else json.dumps(rows, indent=2))
    return folder


def example(**kw) -> dict:
    row = {"db_id": "clinic", "question": "How many doctors are there?",
           "sql": "SELECT count(*) FROM doctors", "external_knowledge": "", "cot": COT,
           "sql_complexity": "Simple", "question_style": "Formal"}
    return {**row, **kw}


# ----------------------------------------------------------------- the source


def test_the_layout_prepares_with_sql_answers_by_default(synsql):
    out = prepare_in_memory(params(source="synsql", path=str(synsql)))
    assert len(out["train"]) + len(out["eval"]) == 400
    assert {r["db_id"] for r in out["eval"]}.isdisjoint({r["db_id"] for r in out["train"]})
    row = out["train"][0]
    assert row["completion"][0]["content"] == row["query"]
    assert row["prompt"][0]["content"] == SYSTEM_PROMPT
    assert row["id"].startswith("train-") and Path(row["db_path"]).parent.parent.name == "databases"


def test_reasoning_answers_are_the_chain_of_thought_then_the_sql(synsql):
    out = prepare_in_memory(params(source="synsql", path=str(synsql), answer="reasoning"))
    for row in out["train"][:20]:
        answer = row["completion"][0]["content"]
        assert answer == synsql_cot(row["question"], row["query"])  # SynSQL's cot, as written
        assert answer.endswith(f"```sql\n{row['query']}\n```")
        assert extract_sql(answer) == row["query"]
        assert row["prompt"][0]["content"] == REASONING_SYSTEM_PROMPT


def test_reasoning_answer_appends_the_sql_to_a_chain_of_thought_without_it():
    assert reasoning_answer("Count the rows.", "SELECT count(*) FROM t") == \
        "Count the rows.\n\n```sql\nSELECT count(*) FROM t\n```"
    assert reasoning_answer(COT, "SELECT count(*)  FROM doctors;") == COT
    assert reasoning_answer("```sql\nSELECT 1\n```", "SELECT 2").endswith("```sql\nSELECT 2\n```")


def test_external_knowledge_is_the_evidence(tmp_path, synsql):
    folder = write_examples(tmp_path / "s", synsql, [
        example(external_knowledge="A doctor is a row of doctors."), example(db_id="shop"),
        example(db_id="school"), example(db_id="library")])
    out = prepare_in_memory(params(source="synsql", path=str(folder), eval_fraction=0.25))
    rows = [r for split in out.values() for r in split if r["db_id"] == "clinic"]
    assert rows[0]["evidence"] == "A doctor is a row of doctors."
    assert "Evidence: A doctor is a row of doctors." in rows[0]["prompt"][1]["content"]


def test_the_path_may_be_the_json_file_and_other_splits_are_held_out(tmp_path, synsql):
    folder = write_examples(tmp_path / "s", synsql, [example(db_id=db) for db in
                                                     ["clinic", "shop", "school", "library"]])
    train, evals = load_dataset_splits("synsql", str(folder / "data.json"), "train", "dev",
                                       0.25, 0)
    assert len(list(train.examples)) == 3 and len(list(evals.examples)) == 1


def test_workers_give_the_same_records_and_metrics(synsql):
    examples = lambda: load_dataset_splits("synsql", str(synsql), "train", "dev", 0.1, 0,  # noqa: E731
                                           reasoning=True)[0]
    outputs = []
    for workers in (1, 2, 3):
        train = examples()
        stats = PrepareStats()
        rows = list(prepare_examples(train.examples, train.schemas, stats=stats,
                                     workers=workers, options=_reasoning_options()))
        outputs.append((json.dumps(rows), stats.as_metrics("train")))
    assert outputs[0] == outputs[1] == outputs[2]


def _reasoning_options():
    from text2sql.data.prepare import prompt_options

    return prompt_options(params(answer="reasoning"))


def test_the_file_is_streamed_not_loaded(tmp_path, synsql, monkeypatch):
    """Reading never decodes the whole array: ``json.load``/``loads`` of it would fail here,
    and a file of 4,000 examples is read with a 64 KiB buffer."""
    folder = build_synsql_dataset(tmp_path / "big", 4000)
    size = (folder / "data.json").stat().st_size
    assert size > 2_000_000
    real_loads = json.loads
    monkeypatch.setattr(json, "load", lambda *a, **k: pytest.fail("json.load of the file"))
    monkeypatch.setattr(json, "loads", lambda s, *a, **k: pytest.fail("json.loads of the file")
                        if len(s) > 100_000 else real_loads(s, *a, **k))
    elements = iter_json_array(folder / "data.json", chunk=64 << 10, max_item=1 << 20)
    assert sum(1 for _ in elements) == 4000
    train, _ = load_dataset_splits("synsql", str(folder), "train", "dev", 0.1, 0)
    assert sum(1 for _ in train.examples) > 3000


def test_reading_stays_in_bounded_memory(tmp_path):
    """The peak memory of reading 40,000 examples (a 30 MB file, twice: the held-out split's
    databases, then the training split) is that of reading 2,000: nothing grows with the
    file. (bench/bench_synsql.py measures preparing a million.)"""
    def peak_mb(n: int) -> float:
        folder = build_synsql_dataset(tmp_path / f"s{n}", n)
        code = ("import resource; from text2sql.data.sources import load_dataset_splits\n"
                f"train, _ = load_dataset_splits('synsql', {str(folder)!r}, 'train', 'dev', "
                "0.25, 0, reasoning=True)\n"
                "n = sum(len(e.reasoning) > 0 for e in train.examples)\n"
                "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=REPO, check=True)
        return float(done.stdout.split()[1])

    small, large = peak_mb(2_000), peak_mb(40_000)
    assert large < small + 15, (small, large)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(("raw", "match"), [
    ('[{"db_id": "clinic", "question": "q", "sql": "SELECT 1"},\n  {"db_id": "clinic",\n'
     '   "question": "q"}]', r"data.json:2: example 1: missing field 'sql' \(every SynSQL"),
    ('[{"db_id": "clinic", "question": "q", "sql": "SELECT 1"},\n  {"db_id": "clinic", '
     '"question": 3, "sql": "SELECT 1"}]', r"data.json:2: example 1: field 'question' must be"),
    ('[{"db_id": "clinic", "question": "q", "sql": "SELECT 1"},\n\n  ["a list"]]',
     r"data.json:3: example 1: expected a JSON object, got list"),
    ('[{"db_id": "clinic", "question": "q", "sql": "SELECT 1"},\n  {"db_id": "clinic",, }]',
     r"data.json:2: element 1: invalid JSON"),
    ('[{"db_id": "clinic", "question": "q", "sql": "SELECT 1"},\n  {"db_id": "clinic", "qu',
     r"data.json:2: element 1: invalid JSON"),
    ('{"db_id": "clinic"}', r"data.json:1: expected a JSON array"),
    ('[{"db_id": "nowhere", "question": "q", "sql": "SELECT 1"}]',
     r"data.json:1: example 0: unknown db_id 'nowhere': it is not in .*tables.json"),
])
def test_bad_input_names_the_file_line_and_field(tmp_path, synsql, raw, match):
    folder = write_examples(tmp_path / "s", synsql, [], raw=raw)
    with pytest.raises(DataError, match=match):
        prepare_in_memory(params(source="synsql", path=str(folder), eval_fraction=0.5))


def test_a_missing_folder_or_file_is_named(tmp_path, synsql):
    with pytest.raises(DataError, match=r"nowhere: SynSQL folder or JSON file not found"):
        load_dataset_splits("synsql", str(tmp_path / "nowhere"), "train", "dev", 0.1, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no data for split 'train' \(looked for train.json "
                                         r"or data.json"):
        load_dataset_splits("synsql", str(tmp_path / "empty"), "train", "dev", 0.1, 0)


def test_reasoning_without_a_chain_of_thought_names_the_key_and_source(tmp_path, synsql,
                                                                      sample_dir):
    folder = write_examples(tmp_path / "s", synsql, [example(), example(cot=None)])
    with pytest.raises(DataError, match=r"data.json:\d+: example 1: prepare.answer is "
                                        r"reasoning, but this synsql example has no chain of "
                                        r"thought \(field 'cot'\)"):
        prepare_in_memory(params(source="synsql", path=str(folder), answer="reasoning"))
    with pytest.raises(DataError, match=r"train_spider.json: example 0: prepare.answer is "
                                        r"reasoning, but this spider example has no chain"):
        prepare_in_memory(params(path=str(sample_dir), answer="reasoning"))
    with pytest.raises(DataError, match=r"prepare.answer is reasoning, but source sparc"):
        prepare_in_memory(params(source="sparc", path=str(REPO / "data/sample-sparc"),
                                 answer="reasoning"))
    with pytest.raises(DataError, match=r"prepare.answer: Input should be 'sql' or 'reasoning'"):
        params(answer="thinking")
    with pytest.raises(DataError, match=r"prepare.source: Input should be .*'synsql'"):
        params(source="omnisql")


def test_jsonl_reads_the_chain_of_thought_from_its_column(tmp_path, sample_dir):
    lines = [{"question": "How many doctors?", "query": "SELECT count(*) FROM doctors",
              "db_id": db, "reasoning": "Count the rows."} for db in ["clinic", "shop"]]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = prepare_in_memory(params(source="jsonl", path=str(tmp_path / "d.jsonl"),
                                   db_dir=str(sample_dir / "database"), answer="reasoning",
                                   eval_fraction=0.5, check_gold=False,
                                   columns={"cot": "reasoning"}))
    assert out["train"][0]["completion"][0]["content"] == \
        "Count the rows.\n\n```sql\nSELECT count(*) FROM doctors\n```"


# ------------------------------------------------- readers of a reasoning answer


@pytest.mark.parametrize(("raw", "sql"), [
    (COT, "SELECT count(*) FROM doctors"),  # OmniSQL: the last ```sql block, drafts before it
    (COT + "\nThis counts every doctor.<|im_end|>", "SELECT count(*) FROM doctors"),
    ("We need `SELECT name FROM t` first.\n```sql\nSELECT name FROM t WHERE x = 1;\n```",
     "SELECT name FROM t WHERE x = 1"),
    ("<think>\nMaybe SELECT * FROM t?\n```sql\nSELECT * FROM t\n```\n</think>\n"
     "<answer>\n```sql\nSELECT a FROM t\n```\n</answer>", "SELECT a FROM t"),  # SLM-SQL's format
    ("<think>Only a count is asked.</think>\nSELECT count(*) FROM t", "SELECT count(*) FROM t"),
    ("Step 1: the doctors table.\n```sql\nSELECT count(*) FROM doc", "SELECT count(*) FROM doc"),
])
def test_sql_is_extracted_from_an_answer_that_reasons_first(raw, sql):
    assert extract_sql(raw) == sql


def test_evaluation_reads_the_final_sql_of_a_whole_answer(tmp_path, sample_dir):
    from text2sql.commands.evaluate import read_predictions
    from text2sql.data.sources import load_spider_split

    examples = list(load_spider_split(sample_dir, "dev").examples)[:2]
    reasoning = f"Think first.\n```sql\nSELECT 1\n```\nThen:\n```sql\n{examples[0].query}\n```"
    lines = [{"id": examples[0].id, "sql": reasoning}, {"id": examples[1].id, "sql": "SELECT 1"}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert read_predictions(path, examples) == {0: examples[0].query, 1: "SELECT 1"}
    assert answer_sql("SELECT a\nFROM t") == "SELECT a\nFROM t"  # plain SQL: as given


def test_voting_over_reasoning_answers_goes_by_their_final_sql(sample_dir):
    from text2sql.ask.database import open_database
    from text2sql.ask.pipeline import candidates_of, choose_sql
    from text2sql.inference.hf import Generation

    db = open_database(sample_dir / "database" / "clinic" / "clinic.sqlite")
    right, wrong = "SELECT count(*) FROM doctors", "SELECT count(*) FROM patients"
    texts = [f"Doctors are in doctors.\n```sql\n{wrong}\n```\nNo:\n```sql\n{right}\n```",
             f"Count the patients? No, the doctors.\n```sql\n{right}\n```",
             f"```sql\n{right}\n```\nor rather\n```sql\n{wrong}\n```"]
    prompt = [{"role": "user", "content": "How many doctors are there?"}]
    candidates = candidates_of(prompt, Generation(texts, 0.0, 0, [-3.0, -2.0, -1.0]), db)
    chosen, tally = choose_sql(db, candidates)
    assert candidates[chosen].sql == right and tally.votes == 2 and tally.samples == 3


def test_the_modelfile_of_a_reasoning_model(tmp_path, synsql):
    pytest.importorskip("transformers")
    from text2sql.export.pipeline import trained_system_prompt, write_modelfile
    from text2sql.modeling.tiny import train_tokenizer, training_texts

    rows = prepare_in_memory(params(source="synsql", path=str(synsql), answer="reasoning",
                                    max_train_examples=50, max_eval_examples=10))["eval"]
    assert trained_system_prompt(rows) == REASONING_SYSTEM_PROMPT
    assert trained_system_prompt([]) == SYSTEM_PROMPT
    tokenizer = train_tokenizer(training_texts(rows), 400)
    text = write_modelfile(tmp_path, "model-q4_k_m.gguf", tokenizer,
                           trained_system_prompt(rows)).read_text()
    assert f'SYSTEM """{REASONING_SYSTEM_PROMPT}"""' in text
    stops = [line.split('"')[1] for line in text.splitlines() if line.startswith("PARAMETER stop")]
    # Only end-of-turn tokens stop it: never a fence, a newline or a semicolon in its steps.
    assert stops and all(s.startswith("<|") for s in stops)
