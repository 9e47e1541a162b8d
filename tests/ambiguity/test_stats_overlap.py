"""`ambiguity stats` reports captions two corpora share and tests only the captions each has alone."""

from __future__ import annotations

import json

from alignlab.cli import main

SHARED = ["a bat flew out of the cave", "a seal rests on the rocks", "a crane stands in the river"]
A_ONLY = ["the player swung the bat", "a mouse sits by the keyboard", "two kites over the bank"]
B_ONLY = ["a dog runs on the grass", "a red car on the road", "a woman reads a book", "a man eats soup"]


def _write(path, lines):
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return path


def test_overlapping_corpora_are_compared_on_their_disjoint_parts(tmp_path, wn, capsys):
    a = _write(tmp_path / "a.en", SHARED + A_ONLY)
    b = _write(tmp_path / "b.en", [s.upper() for s in SHARED[:2]] + B_ONLY)  # case does not hide a caption
    out = tmp_path / "stats.json"
    assert (
        main(
            [
                "ambiguity",
                "stats",
                "--corpus",
                f"a={a}",
                "--corpus",
                f"b={b}",
                "--method",
                "mfs",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["overlap"] == [
        {
            "a": "a",
            "b": "b",
            "shared_captions": 2,
            "a_records": 6,
            "b_records": 6,
            "a_records_shared": 2,
            "b_records_shared": 2,
        }
    ]
    assert res["corpora"]["a"]["captions"] == 6  # the table still describes the whole corpora
    assert res["tests_on"] == "captions in only one corpus"
    assert "overlap: 2 distinct captions occur in both a and b" in printed
    # The tests equal those of two corpora made of the disjoint parts.
    a2, b2 = _write(tmp_path / "a2.en", [SHARED[2], *A_ONLY]), _write(tmp_path / "b2.en", B_ONLY)
    out2 = tmp_path / "stats2.json"
    assert (
        main(
            [
                "ambiguity",
                "stats",
                "--corpus",
                f"a={a2}",
                "--corpus",
                f"b={b2}",
                "--method",
                "mfs",
                "--out",
                str(out2),
                "--quiet",
            ]
        )
        == 0
    )
    res2 = json.loads(out2.read_text())
    assert res2["tests_on"] == "all captions" and res2["overlap"][0]["shared_captions"] == 0
    assert res["tests"] == res2["tests"]


def test_a_corpus_inside_the_other_gets_no_test_and_a_reason(tmp_path, wn, capsys):
    a = _write(tmp_path / "a.en", SHARED + A_ONLY)
    b = _write(tmp_path / "b.en", SHARED)
    out = tmp_path / "stats.json"
    assert (
        main(
            [
                "ambiguity",
                "stats",
                "--corpus",
                f"all={a}",
                "--corpus",
                f"part={b}",
                "--method",
                "mfs",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert "tests" not in res and res["tests_on"] is None
    assert "no tests: every caption of part also occurs in the other corpus" in capsys.readouterr().out
