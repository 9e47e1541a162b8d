"""``alignlab probe build|eval`` end to end, and bad input as one-line errors."""

from __future__ import annotations

import json

from alignlab.cli import main


def test_build_then_eval_with_the_scene_oracle(tmp_path, capsys):
    items = tmp_path / "items"
    assert (
        main(
            [
                "probe",
                "build",
                "--source",
                "shapes",
                "--out",
                str(items),
                "--items-per-category",
                "4",
                "--tasks",
                "negation,attribute_ownership",
                "--quiet",
            ]
        )
        == 0
    )
    out = tmp_path / "eval"
    assert (
        main(
            [
                "probe",
                "eval",
                "--items",
                str(items),
                "--model",
                "sanity:scene",
                "--out",
                str(out),
                "--bootstrap",
                "200",
                "--quiet",
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert (
        res["metrics"]["negation_acc_pct"] == 100.0 and res["metrics"]["attribute_ownership_acc_pct"] == 100.0
    )
    assert res["data"].startswith("probe:") and res["probe"]["items_sha256"].startswith(res["data"][6:])
    assert (out / "plots" / "negation.png").stat().st_size > 0 and (out / "report.md").exists()
    assert len((out / "per_item.jsonl").read_text().splitlines()) == 4 * 2 + 4 * 4
    assert "skipped" in (out / "report.md").read_text().lower()  # no --lm-captions: unigram LM skipped


def test_eval_of_a_broken_item_file_exits_2_naming_the_line(tmp_path, capsys):
    items = tmp_path / "items"
    main(
        [
            "probe",
            "build",
            "--source",
            "shapes",
            "--out",
            str(items),
            "--items-per-category",
            "2",
            "--tasks",
            "negation",
            "--quiet",
        ]
    )
    lines = (items / "items.jsonl").read_text().splitlines()
    rec = json.loads(lines[2])
    rec["correct"] = 7
    lines[2] = json.dumps(rec)
    (items / "items.jsonl").write_text("\n".join(lines) + "\n")
    code = main(
        ["probe", "eval", "--items", str(items), "--model", "sanity:random", "--no-verify-hash", "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "items.jsonl:3" in err and "out of range" in err
