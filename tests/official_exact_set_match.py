"""The official exact set match verdicts for (gold, pred, db_id) pairs: the steps that
taoyds/test-suite-sql-eval ``evaluation.py --etype match`` takes for one pair (parse both
against the SQLite schema, drop values, map foreign-key columns, ``eval_exact_match``).

    python tests/official_exact_set_match.py OFFICIAL_DIR SPIDER_DIR pairs.jsonl out.jsonl

OFFICIAL_DIR is a checkout of test-suite-sql-eval (not part of this repository); run it
with a Python that has nltk. nltk's punkt data could not be downloaded where the recorded
verdicts were made, so word_tokenize runs with preserve_line=True (the Treebank tokenizer on
the whole query, without punkt's sentence split, which a SQL query does not need).
tests/fixtures/exact_set_match_spider_train.jsonl was made with this script on the pairs of
tests/exact_set_match_pairs.py.
"""


from __future__ import annotations

import json
import sys

EMPTY = {"except": None, "from": {"conds": [], "table_units": []}, "groupBy": [], "having": [],
         "intersect": None, "limit": None, "orderBy": [], "select": [False, []], "union": None,
         "where": []}  # what the official evaluate() scores a prediction it cannot parse as


def main(official_dir: str, spider_dir: str, pairs: str, out_path: str) -> None:
    sys.path.insert(0, official_dir)
    import evaluation as ev
    import nltk
    import process_sql

    process_sql.word_tokenize = lambda s: nltk.word_tokenize(s, preserve_line=True)
    kmaps = ev.build_foreign_key_map_from_json(f"{spider_dir}/tables.json")
    schemas: dict = {}
    with open(pairs) as f, open(out_path, "w") as out:
        for line in f:
            r = json.loads(line)
            db = f"{spider_dir}/database/{r['db_id']}/{r['db_id']}.sqlite"
            schema = schemas.setdefault(db, process_sql.Schema(process_sql.get_schema(db)))
            try:
                g_sql = process_sql.get_sql(schema, r["gold"])
            except Exception:  # officially this stops the whole run
                verdict: int | str = "gold_unparsable"
            else:
                try:
                    p_sql = process_sql.get_sql(schema, r["pred"].replace("value", "1"))
                except Exception:
                    p_sql = json.loads(json.dumps(EMPTY))
                kmap = kmaps[r["db_id"]]
                g_valid = ev.build_valid_col_units(g_sql["from"]["table_units"], schema)
                g_sql = ev.rebuild_sql_col(g_valid, ev.rebuild_sql_val(g_sql), kmap)
                p_valid = ev.build_valid_col_units(p_sql["from"]["table_units"], schema)
                p_sql = ev.rebuild_sql_col(p_valid, ev.rebuild_sql_val(p_sql), kmap)
                verdict = int(ev.Evaluator().eval_exact_match(p_sql, g_sql))
            out.write(json.dumps({**r, "official": verdict}) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])
