"""params.yaml is read strictly: unknown keys and wrong types are errors naming the key."""

from __future__ import annotations

import pytest
import yaml

from text2sql.io import DataError
from text2sql.params import SECTIONS, TrainParams, load_params, parse_section


def test_every_section_of_the_committed_params_is_valid(repo_root):
    for section in SECTIONS:
        load_params(section, repo_root / "params.yaml")


def test_committed_params_spell_out_every_key(repo_root):
    """params.yaml documents every key: none is left to a code default."""
    data = yaml.safe_load((repo_root / "params.yaml").read_text())
    for name, cls in SECTIONS.items():
        assert set(data[name]) == set(cls.model_fields), name


def test_mistyped_key_is_named_with_the_known_ones():
    with pytest.raises(DataError, match=r"unknown key 'train.epoch'.*epochs"):
        parse_section(TrainParams, {"epoch": 3}, "train")
    with pytest.raises(DataError, match=r"unknown key 'train.lora.rank'.*\br\b"):
        parse_section(TrainParams, {"lora": {"rank": 8}}, "train")


def test_wrong_type_names_key_and_value():
    with pytest.raises(DataError, match=r"train.epochs: .*'three'"):
        parse_section(TrainParams, {"epochs": "three"}, "train")
    with pytest.raises(DataError, match=r"train.batch_size"):
        parse_section(TrainParams, {"batch_size": 0}, "train")


def test_yaml_exponent_floats_without_dot_are_accepted():
    # PyYAML reads 2e-4 as the string "2e-4"; it must still mean 0.0002.
    data = yaml.safe_load("learning_rate: 2e-4")
    assert isinstance(data["learning_rate"], str)
    assert parse_section(TrainParams, data, "train").learning_rate == pytest.approx(2e-4)


def test_unknown_section_is_an_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: {}\ntrian: {}\n")
    with pytest.raises(DataError, match="trian"):
        load_params("train", path)


def test_params_yaml_is_in_the_form_dvc_writes_back(repo_root, tmp_path):
    """`dvc exp run -S` rewrites params.yaml with its own YAML writer (empty for null, block
    lists); the committed file is already in that form, so `dvc exp apply` and a commit
    show only the values that changed."""
    from dvc.utils.hydra import apply_overrides

    copy = tmp_path / "params.yaml"
    copy.write_text((repo_root / "params.yaml").read_text())
    seed = yaml.safe_load(copy.read_text())["train"]["seed"]
    apply_overrides(copy, [f"train.seed={seed}"])  # what `dvc exp run -S train.seed=...` does
    assert copy.read_text() == (repo_root / "params.yaml").read_text()


def test_check_all_params_names_every_bad_key(tmp_path):
    from text2sql.params import check_all_params

    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  epoch: 3\ninfer:\n  batch_size: many\n")
    with pytest.raises(DataError) as e:
        check_all_params(bad)
    assert "unknown key 'train.epoch'" in str(e.value)
    assert "infer.batch_size" in str(e.value)


def test_emptying_a_list_with_dvc_keeps_params_yaml_valid(repo_root, tmp_path):
    """ruamel (DVC's writer) mangles the next lines when a commented key's block list is
    replaced by `[]`: no comment may sit on a list-valued key of params.yaml."""
    from dvc.utils.hydra import apply_overrides

    copy = tmp_path / "params.yaml"
    copy.write_text((repo_root / "params.yaml").read_text())
    apply_overrides(copy, ["train.lora.modules_to_save=[]", "train.lora.target_modules=[q_proj]"])
    train = load_params("train", copy)
    assert train.lora.modules_to_save == [] and train.lora.target_modules == ["q_proj"]
    assert train.builtin == load_params("train", repo_root / "params.yaml").builtin


def test_the_defaults_in_code_are_the_committed_params():
    """One source of truth: a key left out of params.yaml means what params.yaml says."""
    from tests.conftest import REPO

    committed = yaml.safe_load((REPO / "params.yaml").read_text())

    def differences(model, values, where):
        out = []
        for key, value in values.items():
            default = type(model).model_fields[key].get_default(call_default_factory=True)
            if isinstance(value, dict) and hasattr(default, "model_fields"):
                out += differences(default, value, f"{where}{key}.")
            elif (default.model_dump() if hasattr(default, "model_dump") else default) != value:
                out.append(f"{where}{key}: params.py {default!r}, params.yaml {value!r}")
        return out

    found = []
    for section, values in committed.items():
        found += differences(SECTIONS[section](), values, f"{section}.")
    assert not found, "\n".join(found)
