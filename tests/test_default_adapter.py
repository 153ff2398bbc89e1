"""Without --adapter, the commands run models/aligned (what infer evaluated), else
models/adapter with a note, else stop with an error naming both."""

from __future__ import annotations

import shutil

import pytest

from text2sql.cli import build_parser, main
from text2sql.io import iter_jsonl, write_jsonl


@pytest.fixture()
def workdir(tmp_path, monkeypatch, prepared_rows):
    """An empty working folder (no models/) holding two prepared questions."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "eval.jsonl", prepared_rows["eval"][:2])
    return tmp_path


def predict(capsys) -> tuple[int, str]:
    code = main(["predict", "eval.jsonl", "-o", "p.jsonl", "--max-new-tokens", "8",
                 "--params", "none.yaml"])
    return code, capsys.readouterr().err


def test_the_aligned_adapter_comes_first(workdir, tiny_adapter, capsys):
    shutil.copytree(tiny_adapter, workdir / "models/aligned")
    # A train-stage folder that cannot load: using it would fail the command.
    (workdir / "models/adapter").mkdir()
    (workdir / "models/adapter/adapter_config.json").write_text("{}")
    code, err = predict(capsys)
    assert code == 0, err
    assert "models/adapter" not in err
    assert len(list(iter_jsonl(workdir / "p.jsonl"))) == 2


def test_only_trained_falls_back_with_one_line(workdir, tiny_adapter, capsys):
    shutil.copytree(tiny_adapter, workdir / "models/adapter")
    code, err = predict(capsys)
    assert code == 0, err
    [note] = [line for line in err.splitlines() if "models/aligned" in line]
    assert note.startswith("text2sql predict: models/aligned not found, using models/adapter")
    assert "dvc repro align" in note
    assert len(list(iter_jsonl(workdir / "p.jsonl"))) == 2


def test_neither_is_a_clear_error(workdir, sample_dir, capsys):
    (workdir / "models/aligned").mkdir(parents=True)  # a folder without adapter_config.json
    code, err = predict(capsys)
    assert code == 2 and not (workdir / "p.jsonl").exists()
    assert "neither models/aligned (the align stage's output) nor models/adapter" in err
    assert "`dvc repro align`" in err and "--adapter DIR" in err
    db = sample_dir / "database/school/school.sqlite"
    assert main(["chat", "--db", str(db), "--params", "none.yaml"]) == 2
    assert "text2sql chat: error: no trained adapter: neither models/aligned" \
        in capsys.readouterr().err
    assert main(["serve", "--databases", str(workdir)]) == 2
    assert "or --no-model to serve only SQL sent by clients" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "ask", "chat", "serve"])
def test_help_names_the_aligned_default(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: models/aligned, the align stage's output" in out
