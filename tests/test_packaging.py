"""Packaging: extras that match what the code imports, a license, shipped example configs, and commands
that end in one line naming the extra when an optional package is missing."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement

from alignlab import configs, needs
from alignlab.cli import build_parser, leaf_parsers, main
from alignlab.core import extras
from alignlab.core.config import to_dict
from extras_cases import EXTRA_CASES  # tests/extras_cases.py

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OPTIONAL = PYPROJECT["project"]["optional-dependencies"]


def _extra_dists(extra: str) -> set[str]:
    """Distribution names an extra installs, following self-references like alignlab[plot]."""
    out: set[str] = set()
    for spec in OPTIONAL[extra]:
        req = Requirement(spec)
        if req.name == "alignlab":
            for sub in req.extras:
                out |= _extra_dists(sub)
        else:
            out.add(req.name.lower().replace("_", "-"))
    return out


def test_every_extra_in_pyproject_is_known_to_the_checker_and_back():
    assert set(OPTIONAL) - {"dev", "all"} == set(extras.EXTRAS)


@pytest.mark.parametrize("extra", sorted(extras.EXTRAS))
def test_the_modules_an_extra_promises_come_from_the_packages_it_installs(extra):
    provided = md.packages_distributions()
    dists = _extra_dists(extra)
    for module in extras.EXTRAS[extra]:
        owners = {d.lower().replace("_", "-") for d in provided.get(module, [])}
        if not owners:
            pytest.skip(f"{module} is not installed here, so its distribution cannot be looked up")
        assert owners & dists, (
            f"extra {extra!r} promises {module}, which comes from {owners}, not from {dists}"
        )


def test_all_installs_every_building_block_but_openclip():
    blocks = {"hf", "embed", "ml", "nlp", "mt", "plot", "pretrained", "scale", "tensorboard"}
    assert _extra_dists("all") == set().union(*(_extra_dists(b) for b in blocks))
    assert not _extra_dists("all") & _extra_dists("openclip")  # a multi-GB CUDA torch: opt-in only


def test_license_is_an_spdx_string_with_a_license_file_and_classifiers():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY" in text
    assert project["license-files"] == ["LICENSE"]
    assert any(c.startswith("Topic :: Scientific/Engineering") for c in project["classifiers"])
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # deprecated beside SPDX


def test_package_data_names_only_files_that_exist():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["alignlab"]
    for pattern in patterns:
        assert list((ROOT / "src" / "alignlab").glob(pattern)), f"package-data {pattern!r} matches nothing"


# ---- shipped configs -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(configs.CONFIGS))
def test_each_shipped_config_is_its_commands_full_default(name):
    shipped = configs.text(name)
    assert shipped == configs.render(name), (
        f"{name}.yaml differs from the built-in defaults: "
        "run python -c 'import alignlab.configs as c; c.write_all()'"
    )
    data = yaml.safe_load(shipped)
    assert to_dict(configs.loader(name)(data)) == to_dict(configs.loader(name)({}))


def test_config_show_prints_the_file_and_writes_it_without_overwriting(tmp_path, capsys):
    assert main(["config", "show", "train"]) == 0
    assert capsys.readouterr().out == configs.text("train")
    target = tmp_path / "my.yaml"
    assert main(["config", "show", "dcd-teacher", "--out", str(target)]) == 0
    assert target.read_text() == configs.text("dcd-teacher")
    target.write_text("mine\n")
    assert main(["config", "show", "dcd-teacher", "--out", str(target)]) == 2
    assert target.read_text() == "mine\n"
    assert "exists" in capsys.readouterr().err


def test_a_shipped_config_runs_through_the_train_command_loader(tmp_path):
    from alignlab.retrieval.cli import _run_config

    path = tmp_path / "train.yaml"
    path.write_text(configs.text("train"))
    assert to_dict(_run_config(path, ["train.epochs=1"])) == to_dict(_run_config(None, ["train.epochs=1"]))


# ---- nested overrides keep the command's own defaults -----------------------------------------------


def _resolved(argv: list[str]):
    """The config a command builds from ``argv`` (parsed by the real command tree), before any work."""
    import importlib

    args = build_parser().parse_args(argv)
    if argv[0] == "train":
        return importlib.import_module("alignlab.retrieval.cli")._run_config(
            args.config, args.overrides, args.seed
        )
    if argv[:3] == ["distill", "pesf", "train"]:
        return importlib.import_module("alignlab.distill.pesf.cli")._config(args)
    if argv[:2] == ["mmt", "train"]:
        return importlib.import_module("alignlab.mmt.cli")._train_configs(args)
    dcd = importlib.import_module("alignlab.distill.dcd.cli")
    return dcd._teacher_config(args) if argv[2] == "teacher" else dcd._student_config(args)


@pytest.mark.parametrize(
    "argv,key,value",
    [
        (["train", "--out", "x"], "train.epochs", 3),
        (["distill", "pesf", "train", "--out", "x"], "teacher.epochs", 7),
        (["mmt", "train", "--out", "x"], "train.epochs", 5),
        (["distill", "dcd", "teacher", "--out", "x"], "train.epochs", 6),
        (["distill", "dcd", "train", "--out", "x"], "train.epochs", 6),
        (["distill", "dcd", "mine", "--out", "x"], "train.batch_size", 5),
        (["repro", "run", "--out", "x"], "train.epochs", 3),
    ],
    ids=["train", "pesf train", "mmt train", "dcd teacher", "dcd train", "dcd mine", "repro run"],
)
def test_every_command_applies_one_nested_set_and_keeps_its_own_defaults(argv, key, value):
    """`--set train.epochs=N` changes that key alone: the section keeps the command's own defaults."""
    default = to_dict_all(_resolved(argv))
    changed = to_dict_all(_resolved([*argv, "--set", f"{key}={value}"]))
    section, leaf = key.split(".")
    assert default[section][leaf] != value and changed[section].pop(leaf) == value
    default[section].pop(leaf)
    assert changed == default


def to_dict_all(cfg):
    """One dict of a config, or of the (model, train, visual) configs `mmt train` builds."""
    if isinstance(cfg, tuple):
        return {name: to_dict(part) for name, part in zip(("model", "train", "visual"), cfg, strict=True)}
    return to_dict(cfg)


def test_a_nested_dcd_override_changes_only_that_key():
    from alignlab.distill.dcd.train import load_run_config, load_teacher_config

    for load in (load_run_config, load_teacher_config):
        default, changed = to_dict(load({})), to_dict(load({"train": {"epochs": 6}}))
        assert changed["train"].pop("epochs") == 6
        default["train"].pop("epochs")
        assert changed == default


@pytest.mark.parametrize(
    "module",
    [
        "alignlab.retrieval.experiment",
        "alignlab.distill.dcd.experiment",
        "alignlab.probe.experiment",
        "alignlab.distill.pesf.experiment",
        "alignlab.threeam.experiment",
        "alignlab.commonit.experiment",
    ],
)
def test_an_experiment_override_of_one_nested_key_keeps_every_other_quick_setting(module):
    import importlib

    mod = importlib.import_module(module)

    # A positive number inside a section (at any depth) that also holds other quick settings.
    def leaves(node, path):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from leaves(v, (*path, k))
            elif path and len(node) >= 2 and isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
                yield (*path, k), v

    path, value = next(leaves(mod.QUICK, ()))
    override = bumped = value * 2
    for part in reversed(path):
        override = {part: override}

    def pop(cfg):
        node = cfg
        for part in path[:-1]:
            node = node[part]
        return node.pop(path[-1])

    default = to_dict(mod.experiment_config(quick=True))
    changed = to_dict(mod.experiment_config(quick=True, overrides=override))
    assert pop(default) == value and pop(changed) == bumped  # the quick setting, then the override
    assert changed == default


# ---- optional extras fail cleanly --------------------------------------------------------------------


def test_every_rule_names_a_real_command_and_extra():
    leaves = set(leaf_parsers(build_parser()))
    assert set(needs.RULES) <= leaves
    for exps in needs._EXPERIMENT_EXTRAS.values():
        assert all(extra in extras.EXTRAS for extra, _ in exps)


@pytest.mark.parametrize("argv,extra", EXTRA_CASES, ids=[" ".join(c[0][:3]) for c in EXTRA_CASES])
def test_a_missing_extra_ends_in_one_line_before_any_work(argv, extra, tmp_path, monkeypatch, capsys):
    hidden = set(extras.EXTRAS[extra])
    real = extras.missing_modules
    monkeypatch.setattr(
        extras,
        "missing_modules",
        lambda modules: [m for m in modules if m in hidden] + [m for m in real(modules) if m not in hidden],
    )
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert re.search(rf"pip install 'alignlab\[{extra}\]'", err[0]), err[0]
    assert not (tmp_path / "out").exists()


def test_narrow_needs_ask_only_for_what_the_options_use():
    parser = build_parser()
    task = parser.parse_args(["commonit", "group", "x.jsonl", "--out", "o", "--metric", "task"])
    assert needs.needed(task) == []
    tfidf = parser.parse_args(
        ["commonit", "group", "x.jsonl", "--out", "o", "--metric", "embedding", "--encoder", "tfidf"]
    )
    assert needs.needed(tfidf) == [("commonit", ("sklearn",))]
    lesk = parser.parse_args(["ambiguity", "wsd", "--method", "lesk", "a bat", "bat"])
    assert needs.needed(lesk) == [("ambiguity", ("nltk",))]
    tiny = parser.parse_args(["eval", "retrieval", "--model", "tiny-dual", "--protocol", "shapes-1k"])
    assert needs.needed(tiny) == []
