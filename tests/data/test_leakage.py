"""`alignlab data check` reports captions, images and pairs shared between splits, on Karpathy files and on
plain parallel text (3AM's release layout)."""

from __future__ import annotations

import json

import pytest
from datahelpers import write_png

from alignlab.cli import main
from alignlab.data.leakage import SplitRecords, find_leakage


def _split(name, rows):
    rec = SplitRecords(name)
    for k, (cap, img) in enumerate(rows, 1):
        rec.add(cap, img, f"{name}.en:{k}")
    return rec


def test_each_kind_counts_the_later_splits_records_and_names_both_places():
    train = _split("train", [("A dog runs.", "1.jpg"), ("a cat sleeps", "2.jpg"), ("a bird sings", "3.jpg")])
    test = _split(
        "test",
        [
            ("a  dog runs.", "9.jpg"),
            ("a cat sleeps", "2.jpg"),
            ("new words", "2.jpg"),
            ("a fish swims", "8.jpg"),
        ],
    )
    leaks = {leak.kind: leak for leak in find_leakage({"test": test, "train": train})}
    assert leaks["caption"].records == 2 and leaks["caption"].distinct == 2  # case and spaces do not matter
    assert leaks["image"].records == 2 and leaks["image"].distinct == 1
    assert leaks["pair"].records == 1
    assert (
        leaks["caption"].later == "test" and leaks["caption"].earlier == "train"
    )  # order by split, not by dict
    assert leaks["caption"].example == "test.en:1 = train.en:1"
    assert find_leakage({"train": train, "test": _split("test", [("unseen", "7.jpg")])}) == []


@pytest.fixture
def parallel(tmp_path):
    d = tmp_path / "3am"
    d.mkdir()
    files = {
        "train.en": ["a man rides a bike", "two dogs play", "a bat in a cave"],
        "train.zh": ["一个男人骑自行车", "两只狗在玩", "山洞里的一只蝙蝠"],
        "images-train.txt": ["1.jpg", "2.jpg", "3.jpg"],
        "val.en": ["Two dogs  play", "a crane lifts steel"],
        "val.zh": ["两只狗在玩", "一台起重机吊起钢材"],
        "images-val.txt": ["5.jpg", "3.jpg"],
    }
    for name, lines in files.items():
        (d / name).write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return d


def test_data_check_accepts_parallel_text_and_reports_leakage(parallel, capsys):
    assert main(["data", "check", str(parallel)]) == 0  # reported; a failure only when asked for
    out = capsys.readouterr().out
    assert "parallel text, train 3 lines (3 images), val 2 lines (2 images)" in out
    assert "1 of 2 val records repeat train captions (1 distinct; first: val.en:1 = train.en:2)" in out
    assert "1 of 2 val records repeat train images (1 distinct; first: val.en:2 = train.en:3)" in out
    assert "pairs" not in out  # no (caption, image) pair is shared
    assert "no problems found (besides the leakage above)" in out
    assert (
        main(["data", "check", str(parallel / "train.en"), "--json", "--fail-on-leakage"]) == 2
    )  # via a file
    report = json.loads(capsys.readouterr().out)
    assert {(x["kind"], x["records"]) for x in report["leakage"]} == {("caption", 1), ("image", 1)}


def test_misaligned_or_empty_parallel_lines_are_problems_with_file_and_line(parallel, capsys):
    (parallel / "val.zh").write_text("两只狗在玩\n", encoding="utf-8")
    (parallel / "train.en").write_text("a man rides a bike\n\na bat in a cave\n", encoding="utf-8")
    assert main(["data", "check", str(parallel)]) == 2
    out = capsys.readouterr().out
    assert f"{parallel / 'val.zh'}:2: val.zh has 1 lines, val.en has 2" in out
    assert f"{parallel / 'train.en'}:2: empty line" in out


def test_a_clean_parallel_set_passes(parallel, capsys):
    (parallel / "val.en").write_text("a crane lifts steel\nthe sun sets\n", encoding="utf-8")
    (parallel / "images-val.txt").write_text("5.jpg\n6.jpg\n", encoding="utf-8")
    assert main(["data", "check", str(parallel)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_karpathy_splits_are_checked_for_shared_captions(tmp_path, capsys):
    for name in ("a.png", "b.png"):
        write_png(tmp_path / name)
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "images": [
                    {
                        "filename": "a.png",
                        "split": "train",
                        "sentences": [{"raw": "a red square"}, {"raw": "a square"}],
                    },
                    {"filename": "b.png", "split": "test", "sentences": [{"raw": "A red square"}]},
                ]
            }
        )
    )
    assert main(["data", "check", str(tmp_path), "--fail-on-leakage"]) == 2
    out = capsys.readouterr().out
    assert "1 of 1 test records repeat train captions (1 distinct; first: image 'b' = image 'a')" in out
    assert (
        main(["data", "check", str(tmp_path), "--split", "test", "--fail-on-leakage"]) == 0
    )  # nothing to compare


def test_the_real_3am_release_repeats_train_sentences_and_images_in_val(shared_data, capsys):
    # Counted independently with sets over the raw lines: 3 val sentences, 32 val images and 2 pairs of
    # 3AM's val split occur in its train split (the test split is not in ../shared/data).
    assert main(["data", "check", str(shared_data / "3am"), "--json", "--fail-on-leakage"]) == 2
    report = json.loads(capsys.readouterr().out)
    found = {(x["later"], x["earlier"], x["kind"]): x["records"] for x in report["leakage"]}
    assert found == {
        ("val", "train", "caption"): 3,
        ("val", "train", "image"): 32,
        ("val", "train", "pair"): 2,
    }
    assert report["summary"]["splits"]["train"]["lines"] == 23931
