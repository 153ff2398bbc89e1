"""bench/bench_linking.py --tokenizer: whole examples counted in a real tokenizer's tokens, as
the train stage counts them against max_seq_length."""

from __future__ import annotations

import functools
import importlib.util
import subprocess
from pathlib import Path

import pytest

from text2sql.data.prepare import prepare_examples
from text2sql.data.prompts import PromptOptions
from text2sql.data.sources import load_spider_split
from text2sql.modeling.tiny import train_tokenizer


@pytest.fixture(scope="module")
def bench(repo_root):
    spec = importlib.util.spec_from_file_location("bench_linking",
                                                  repo_root / "bench" / "bench_linking.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def qwen2_vocab() -> Path | None:
    """The real Qwen2 vocabulary that llama-cpp-python's source ships, in uv's cache."""
    try:
        cache = subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True,
                               timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    hits = sorted(Path(cache).glob("sdists-*/pypi/llama-cpp-python/*/*/src/vendor/llama.cpp/"
                                   "models/ggml-vocab-qwen2.gguf"))
    return hits[-1] if hits else None


def table_rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| ") and "linking" not in line]


def test_the_longest_example_is_counted_as_training_counts_it(bench, sample_dir, tmp_path,
                                                              capsys):
    from text2sql.training.masking import tokenize_example

    ds = load_spider_split(sample_dir, "train")
    rows = list(prepare_examples(ds.examples[:30], ds.schemas, options=PromptOptions()))
    tok = train_tokenizer([m["content"] for r in rows for m in r["prompt"] + r["completion"]],
                          400)
    tok.save_pretrained(tmp_path / "tok")
    assert bench.main([str(sample_dir), "--limit", "30", "--tokenizer", str(tmp_path / "tok")]) == 0
    out = capsys.readouterr().out
    default = next(r for r in table_rows(out) if r[0].endswith("(default)"))
    lengths = sorted(len(tokenize_example(tok, r["prompt"], r["completion"][0]["content"])
                         .input_ids) for r in rows)
    assert [int(x) for x in default[-3:]] == [lengths[15], lengths[29], lengths[-1]]
    assert lengths[-1] > lengths[0] > 20  # a real count: the examples differ, with the template
    assert "example tok p50" in out


def test_a_missing_gguf_file_is_a_clear_error(bench, sample_dir, tmp_path, capsys):
    missing = tmp_path / "nope.gguf"
    assert bench.main([str(sample_dir), "--limit", "2", "--tokenizer", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--tokenizer" in err


@pytest.mark.skipif(qwen2_vocab() is None,
                    reason="llama-cpp-python's source (its Qwen2 vocabulary) is not in uv's cache")
def test_the_real_qwen2_vocabulary_from_its_gguf_file(bench):
    tok = bench.load_tokenizer(str(qwen2_vocab()))
    assert len(tok) == 151936
    example = {"prompt": [{"role": "system", "content": "You translate."},
                          {"role": "user", "content": "How many singers are there?"}],
               "completion": [{"role": "assistant", "content": "SELECT count(*) FROM singer"}]}
    text = tok.apply_chat_template(example["prompt"] + example["completion"], tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") == 151644
    assert bench.example_tokens(tok, example) == len(ids) - 1  # the template's last newline
