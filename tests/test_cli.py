"""The command line: help for every command, `data shapes`, `data check`, one-line user errors, the demo."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignlab.cli import build_parser, main
from alignlab.data.pairs import load_pairs
from alignlab.data.shapes import ShapesConfig, ShapesWorld


def _commands(parser: argparse.ArgumentParser, prefix=()):
    """Every command path (``("data", "shapes")``, ...) of the parser tree, the groups included."""
    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += _commands(child, (*prefix, name))
    return out


COMMANDS = _commands(build_parser())


def test_the_foundation_commands_exist():
    assert {("data",), ("data", "shapes"), ("data", "check"), ("demo",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "alignlab")
def test_help_works_for_every_command(path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: alignlab") and len(out.splitlines()) > 3


def _parser_of(path, parser=None):
    p = parser or build_parser()
    for name in path:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[name]
    return p


def test_every_command_has_a_help_line_and_every_leaf_has_quiet():
    parser = build_parser()
    for path in COMMANDS:
        p = _parser_of(path, parser)
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        for sub in subs:  # the one-line help shown in the parent's list of commands
            helps = {c.dest: c.help for c in sub._choices_actions}
            assert set(helps) == set(sub.choices) and all(helps.values()), (path, helps)
        if not subs:
            assert any("--quiet" in a.option_strings for a in p._actions), path


@pytest.mark.parametrize("path", [("data", "shapes"), ("data", "check"), ("demo",)])
def test_every_option_of_the_foundation_commands_has_help(path):
    for a in _parser_of(path)._actions:
        assert a.help, (path, a.dest)


def _user_error(capsys, argv, code=2) -> str:
    """Run ``argv``; it must fail with ``code`` and exactly one stderr line ``error: ...``; returns it."""
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


# --- data shapes ---------------------------------------------------------------------------------------


def test_data_shapes_writes_an_export_the_loaders_read(tmp_path, capsys):
    out = tmp_path / "shapes"
    assert (
        main(
            [
                "data",
                "shapes",
                "--out",
                str(out),
                "--train",
                "6",
                "--val",
                "2",
                "--test",
                "3",
                "--seed",
                "4",
                "--image-size",
                "48",
                "--polysemous-rate",
                "0.5",
                "--captions-per-image",
                "6",
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"wrote {out / 'dataset.json'}" in printed and '"train": {"images": 6, "captions": 36}' in printed
    doc = json.loads((out / "dataset.json").read_text())
    assert doc["dataset"] == "shapesworld" and doc["seed"] == 4 and doc["config"]["image_size"] == 48
    assert len(list((out / "images").glob("*.png"))) == 11
    world = ShapesWorld(ShapesConfig(image_size=48, polysemous_rate=0.5, captions_per_image=6))
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        pairs = load_pairs(out, split=split)
        expected = world.generate(n, seed=4, split=split)
        assert pairs.n_images == n and pairs.captions == [c.en for ex in expected for c in ex.captions]
        assert [m["zh"] for m in pairs.caption_meta] == [c.zh for ex in expected for c in ex.captions]
        images = pairs.load_images().permute(0, 2, 3, 1).numpy()
        assert np.array_equal(images, np.stack([ex.image for ex in expected]))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train", "-1"], "--train must be >= 0"),
        (["--train", "0", "--val", "0", "--test", "0"], "nothing to generate"),
        (["--image-size", "8"], "image_size must be at least 16"),
        (["--captions-per-image", "0"], "captions_per_image must be at least 1"),
        (["--polysemous-rate", "1.5"], "polysemous_rate must be in [0, 1]"),
        (["--train", "40", "--captions-per-image", "15"], "could not make 15 distinct captions"),
    ],
)
def test_data_shapes_with_bad_arguments_fails_in_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    line = _user_error(
        capsys, ["data", "shapes", "--out", str(out), "--train", "2", "--val", "0", "--test", "0", *args]
    )
    assert message in line
    assert not out.exists()


def test_data_shapes_into_a_file_path_fails_in_one_line_and_leaves_the_file(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    line = _user_error(
        capsys, ["data", "shapes", "--out", str(target), "--train", "2", "--val", "0", "--test", "0"]
    )
    assert line == f"error: --out is a file, not a folder ({target}); give a folder path"
    assert target.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["results.txt"]


def test_argparse_errors_exit_2_without_a_traceback(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "shapes", "--out", "x", "--train", "many"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid int value: 'many'" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["no-such-command"])


# --- data check ----------------------------------------------------------------------------------------


def _export(tmp_path) -> Path:
    out = tmp_path / "shapes"
    assert (
        main(["data", "shapes", "--out", str(out), "--train", "3", "--val", "0", "--test", "2", "--quiet"])
        == 0
    )
    return out


def test_data_check_exits_0_on_clean_data(tmp_path, capsys):
    out = _export(tmp_path)
    capsys.readouterr()
    assert main(["data", "check", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: 5 images, 25 captions (5–5 per image)" in printed and "no problems found" in printed
    assert main(["data", "check", str(out), "--split", "test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == [] and report["summary"]["images"] == 2


def test_data_check_exits_2_and_lists_every_problem(tmp_path, capsys):
    out = _export(tmp_path)
    doc = json.loads((out / "dataset.json").read_text())
    doc["images"][0]["sentences"][2]["raw"] = " "
    doc["images"][3]["filename"] = "lost.png"
    doc["images"].append(dict(doc["images"][1]))  # a duplicate entry
    (out / "dataset.json").write_text(json.dumps(doc))
    (out / "images" / "train_000002.png").write_bytes(b"broken")
    capsys.readouterr()
    assert main(["data", "check", str(out)]) == 2
    printed = capsys.readouterr().out.splitlines()
    assert "4 problem(s):" in printed
    listed = [ln.strip() for ln in printed[printed.index("4 problem(s):") + 1 :]]
    path = out / "dataset.json"
    assert sorted(listed) == sorted(
        [
            f"{path}: images[0].sentences[2]: empty caption; remove the sentence or give its text",
            f"{path}: images[5]: duplicate image 'images/train_000001.png' (also images[1]); "
            "remove the duplicate",
            f"{path}: images[3] ({out / 'images' / 'lost.png'}): image not found; "
            "fix the image root or remove the entry",
            f"{path}: images[2] ({out / 'images' / 'train_000002.png'}): unreadable image "
            "(UnidentifiedImageError); fix the image root or remove the entry",
        ]
    )


def test_data_check_of_a_csv_uses_the_given_columns(tmp_path, capsys):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "d.csv").write_text("path,text\na.png,hello\nb.png,\n")
    assert (
        main(["data", "check", str(tmp_path / "d.csv"), "--image-field", "path", "--caption-field", "text"])
        == 2
    )
    printed = capsys.readouterr().out
    assert f"{tmp_path / 'd.csv'}:3: empty caption" in printed
    assert "image not found" not in printed  # b.png's only row was dropped before the file check


def test_data_check_of_a_missing_path_is_a_one_line_error(tmp_path, capsys):
    line = _user_error(capsys, ["data", "check", str(tmp_path / "nope")])
    assert line == f"error: data not found ({tmp_path / 'nope'}); check the path"


def test_python_dash_m_alignlab_reports_a_user_error_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "alignlab", "data", "check", str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: data not found ({tmp_path / 'nope.json'}); check the path"
    ]
    assert proc.stdout == ""


def test_data_shapes_in_another_process_writes_byte_identical_files(tmp_path):
    args = ["data", "shapes", "--train", "3", "--val", "1", "--test", "2", "--seed", "9", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "here")]) == 0
    env = dict(os.environ, PYTHONHASHSEED="123")
    proc = subprocess.run(
        [sys.executable, "-m", "alignlab", *args, "--out", str(tmp_path / "there")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    here = {
        p.relative_to(tmp_path / "here"): p.read_bytes()
        for p in (tmp_path / "here").rglob("*")
        if p.is_file()
    }
    there = {
        p.relative_to(tmp_path / "there"): p.read_bytes()
        for p in (tmp_path / "there").rglob("*")
        if p.is_file()
    }
    assert here == there and len(here) == 7


# --- demo ----------------------------------------------------------------------------------------------


def test_demo_quick_data_stage_writes_report_and_contact_sheet(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--only", "data", "--out", str(out), "--quiet"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "## ShapesWorld data" in report and "| train | 1200 |" in report and "## Timings" in report
    assert "→" in report  # sample captions with their translations
    with Image.open(out / "data" / "contact_sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.width > 500 and sheet.height > 150
    assert (out / "data" / "shapes-export" / "dataset.json").is_file()


def test_whole_quick_demo_runs_every_stage_into_one_report(tmp_path, capsys):
    """`alignlab demo --quick`: every available stage runs and reports; none is skipped for a missing part.

    Its wall time is recorded in the report's timing table (the < 2 minute goal is measured there, not
    asserted: test machines differ in load).
    """
    from alignlab.demo import available_stages

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    report = (out / "report.md").read_text()
    timing_rows = [line for line in report.splitlines() if line.startswith("| ") and " | " in line[2:]]
    stages = [name for name, _ in available_stages()]
    assert len(stages) == 7
    for name in stages:
        assert any(row.startswith(f"| {name} |") for row in timing_rows), name
    from alignlab.ambiguity.wordnet import wordnet_available

    if wordnet_available():  # the only stage that may skip, naming what to install, is the WordNet one
        assert "Skipped:" not in report


def test_demo_with_an_unknown_stage_is_a_one_line_error(tmp_path, capsys):
    line = _user_error(capsys, ["demo", "--only", "data,nope", "--out", str(tmp_path / "d")])
    assert "unknown demo stage(s) nope" in line
