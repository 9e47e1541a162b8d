"""ARO-format import (Visual Genome relation and attribution files)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from alignlab.core.errors import DataError
from alignlab.probe.aro import build_aro_items, split_attribution, split_relation
from alignlab.probe.evaluate import load_all_images
from alignlab.probe.items import load_probe


def _aro(tmp_path, n_attr=4):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "1.jpg")
    rel = [
        {
            "image_id": 1,
            "image_path": "1.jpg",
            "bbox_x": 5,
            "bbox_y": 4,
            "bbox_w": 20,
            "bbox_h": 10,
            "relation_name": "sitting on",
            "true_caption": "the cat is sitting on the mat",
            "false_caption": "the mat is sitting on the cat",
        },
        {
            "image_path": "1.jpg",
            "relation_name": "holding",
            "true_caption": "the man holding the lemon",
            "false_caption": "the lemon holding the man",
        },
    ]
    attr = [
        {
            "image_path": "1.jpg",
            "attributes": ["white", "wooden"],
            "true_caption": "the white plate and the wooden table",
            "false_caption": "the wooden plate and the white table",
        }
        for _ in range(n_attr)
    ]
    (tmp_path / "rel.json").write_text(json.dumps(rel))
    (tmp_path / "attr.json").write_text(json.dumps(attr))
    return root


def test_aro_files_become_items_with_crops_and_balanced_negation(tmp_path):
    root = _aro(tmp_path)
    path, info = build_aro_items(
        tmp_path / "probe",
        relation_file=tmp_path / "rel.json",
        attribution_file=tmp_path / "attr.json",
        image_root=root,
    )
    ps = load_probe(path)
    by_task = {}
    for it in ps.items:
        by_task.setdefault(it.task, []).append(it)
    rel = [it for it in by_task["relationship_composition"] if it.scoring == "accuracy"]
    assert {it.category for it in rel} == {"sitting on", "holding"}
    for it in rel + by_task["attribute_ownership"]:
        assert it.options[it.correct] in (
            "the cat is sitting on the mat",
            "the man holding the lemon",
            "the white plate and the wooden table",
        )
    conj = [it for it in by_task["relationship_composition"] if it.scoring == "preference"]
    assert sorted(it.options[1] for it in conj) == ["the cat and the mat", "the man and the lemon"]
    neg = by_task["negation"]
    assert sorted(it.category for it in neg) == [
        "affirmative_true",
        "affirmative_true",
        "negated_true",
        "negated_true",
    ]
    right = {it.options[it.correct] for it in neg}
    assert right == {
        "the plate is white and the table is wooden",
        "the plate is not wooden and the table is not white",
    }
    imgs = load_all_images(ps)
    assert imgs[0][0].size == (20, 10)  # cropped to the bbox
    assert info["source"] == "aro" and ps.root == root.resolve()


def test_relation_and_attribution_splits_are_whole_token():
    assert split_relation("the man holding the lemon", "on") is None  # "on" is no token of the caption
    assert split_relation("the cat is on the mat", "on") == ("the cat", "the mat")
    assert split_attribution("the red apple and the green lemon", ["red", "green"]) == ("apple", "lemon")
    assert split_attribution("a red apple near a green lemon", ["red", "green"]) is None


def test_a_missing_aro_image_names_the_entry(tmp_path):
    root = _aro(tmp_path)
    (root / "1.jpg").unlink()
    with pytest.raises(DataError, match=r"rel.json\[0\]"):
        build_aro_items(tmp_path / "probe", relation_file=tmp_path / "rel.json", image_root=root)


def test_an_entry_without_captions_names_the_entry(tmp_path):
    root = _aro(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps([{"image_path": "1.jpg", "true_caption": "x"}]))
    with pytest.raises(DataError, match=r"bad.json\[0\].*") as err:
        build_aro_items(tmp_path / "probe", relation_file=tmp_path / "bad.json", image_root=root)
    assert "false_caption" in str(err.value)
