"""What the corpus cannot see from the line's form: the right place is blamed, the output-folder rules hold,
and --overwrite is the one way to replace a finished run."""

from __future__ import annotations

import pytest
import yaml

from alignlab.cli import main
from alignlab.core.config import check_run_dir, config_sources, from_dict, load_yaml, merge, parse_overrides
from alignlab.core.errors import ConfigError
from alignlab.retrieval.training import RetrievalRunConfig, load_run_config

from .fixtures import TRAIN_SETTINGS, tree_hash


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def _config(tmp_path, overrides):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 1\n  lr: 0.01\nmargin: 0.2\n")
    data = merge(load_yaml(path), parse_overrides(overrides))
    return load_run_config(data, where=config_sources(path, overrides))


def test_a_value_from_set_is_blamed_on_set_not_on_the_yaml_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        _config(tmp_path, ["train.lr=-1"])
    assert e.value.where == "--set train.lr=-1"
    assert e.value.what.startswith("train.lr must be a finite number > 0") and "train.lr=" in e.value.fix


def test_a_value_from_the_yaml_file_is_blamed_on_its_line(tmp_path):
    (tmp_path / "run.yaml").write_text("train:\n  epochs: 0\n")
    with pytest.raises(ConfigError) as e:
        load_run_config(load_yaml(tmp_path / "run.yaml"), where=config_sources(tmp_path / "run.yaml"))
    assert e.value.where == f"{tmp_path / 'run.yaml'}:2"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", ".nan", 1e400])
def test_non_finite_floats_are_refused_whatever_their_spelling(value):
    with pytest.raises(ConfigError, match="finite"):
        from_dict(RetrievalRunConfig, {"train": {"lr": value}})


def test_an_unfinished_run_with_another_config_is_refused_before_anything_is_written(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": 1}))
    before = tree_hash(run)
    with pytest.raises(ConfigError, match="different config"):
        check_run_dir(run, config={"seed": 2})
    check_run_dir(run, config={"seed": 1})  # the same config resumes
    check_run_dir(run, config={"seed": 2}, resume=False)  # --no-resume starts it again
    assert tree_hash(run) == before


def test_overwrite_replaces_a_finished_run_and_nothing_else_does(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TRAIN_SETTINGS, "--quiet"]) == 0
    finished = tree_hash(out)
    assert main(["train", "--out", str(out), *TRAIN_SETTINGS, "--set", "train.lr=0.001", "--quiet"]) == 2
    assert "--overwrite" in _err(capsys) and tree_hash(out) == finished
    assert (
        main(
            ["train", "--out", str(out), *TRAIN_SETTINGS, "--set", "train.lr=0.001", "--overwrite", "--quiet"]
        )
        == 0
    )
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["lr"] == 0.001


def test_a_wrong_architecture_names_the_first_mismatched_key(tmp_path, capsys):
    import json
    import shutil

    src = tmp_path / "run"
    assert main(["train", "--out", str(src), *TRAIN_SETTINGS, "--quiet"]) == 0
    bad = tmp_path / "bad"
    shutil.copytree(src / "best", bad)
    meta = json.loads((bad / "model.json").read_text())
    meta["config"]["embed_dim"] = meta["config"]["embed_dim"] * 2
    (bad / "model.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["eval", "retrieval", "--model", f"ckpt:{bad}", "--protocol", "shapes-1k", "--quiet"]) == 2
    line = _err(capsys)
    assert "Error(s) in loading" not in line and "proj" in line and "shape" in line
