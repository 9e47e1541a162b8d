"""Image–text pairs and their loaders: Karpathy JSON, COCO captions, CSV/JSONL, ShapesWorld in memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datahelpers import snapshot

from alignlab.core.errors import DataError
from alignlab.data.pairs import (
    ImageTextPairs,
    check_relevance,
    from_shapes,
    load_coco_captions,
    load_karpathy,
    load_pairs,
    load_table,
    save_karpathy,
)
from alignlab.data.shapes import Scene, form_from_dict

# --- ShapesWorld -> Karpathy export -> loader ----------------------------------------------------------


def test_karpathy_round_trip_keeps_captions_relevance_chinese_forms_scenes_and_pixels(
    tmp_path, shapes_splits
):
    pairs = {s: from_shapes(exs, name=f"shapes-{s}") for s, exs in shapes_splits.items()}
    path = save_karpathy(tmp_path / "export", pairs, dataset="shapesworld", extra={"seed": 1})
    assert path == tmp_path / "export" / "dataset.json"
    assert json.loads(path.read_text())["seed"] == 1
    for split, exs in shapes_splits.items():
        back = load_karpathy(path, split=split)
        assert back.image_ids == [ex.image_id for ex in exs]
        assert back.captions == [c.en for ex in exs for c in ex.captions]
        assert back.relevance == pairs[split].relevance
        assert [m["zh"] for m in back.caption_meta] == [c.zh for ex in exs for c in ex.captions]
        assert [m["family"] for m in back.caption_meta] == [c.family for ex in exs for c in ex.captions]
        assert [form_from_dict(m["form"]) for m in back.caption_meta] == [
            c.form for ex in exs for c in ex.captions
        ]
        assert [Scene.from_dict(m["scene"]) for m in back.image_meta] == [ex.scene for ex in exs]
        assert all(m["split"] == split for m in back.image_meta)
        loaded = back.load_images()
        assert loaded.dtype == torch.uint8 and loaded.shape == (len(exs), 3, 64, 64)
        assert np.array_equal(loaded.permute(0, 2, 3, 1).numpy(), np.stack([ex.image for ex in exs]))
    every = load_pairs(tmp_path / "export", split=None)
    assert every.n_images == 15 and every.n_captions == sum(
        len(ex.captions) for exs in shapes_splits.values() for ex in exs
    )
    both = load_karpathy(path, split=["train", "val"])
    assert both.n_images == 10 and {m["split"] for m in both.image_meta} == {"train", "val"}


def test_karpathy_export_is_byte_identical_for_the_same_data(tmp_path, shapes_splits):
    pairs = {s: from_shapes(exs) for s, exs in shapes_splits.items()}
    save_karpathy(tmp_path / "a", pairs)
    save_karpathy(tmp_path / "b", pairs)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    assert len(snapshot(tmp_path / "a")) == 16  # 15 PNGs and dataset.json, no temp files left


def test_save_karpathy_refuses_pairs_that_are_not_in_memory(tmp_path, png):
    on_disk = ImageTextPairs(["a"], ["x"], [[0]], image_paths=[png(tmp_path / "a.png")])
    with pytest.raises(DataError, match="not in memory"):
        save_karpathy(tmp_path / "out", {"test": on_disk})
    assert not (tmp_path / "out" / "dataset.json").exists()


# --- real-data formats ---------------------------------------------------------------------------------


def _karpathy_doc(with_filepath: bool):
    images = []
    for k, (n_caps, split) in enumerate([(5, "test"), (3, "test"), (1, "train"), (6, "test"), (2, "val")]):
        img = {
            "filename": f"{1000 + k}.jpg",
            "split": split,
            "sentences": [
                {"raw": f"caption {j} of image {k} ", "tokens": ["caption"]} for j in range(n_caps)
            ],
        }
        if with_filepath:
            img.update(filepath="val2014", cocoid=500 + k)
        images.append(img)
    return {"dataset": "flickr30k", "images": images}


@pytest.mark.parametrize("with_filepath", [False, True])
def test_karpathy_loader_selects_a_split_with_any_number_of_captions_per_image(tmp_path, png, with_filepath):
    root = tmp_path / "imgs"
    for k in range(5):
        png(root / ("val2014" if with_filepath else "") / f"{1000 + k}.jpg", colour=(10 * k, 0, 0))
    ann = tmp_path / "ann" / "dataset_flickr30k.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(_karpathy_doc(with_filepath)))
    pairs = load_karpathy(ann, split="test", image_root=root)
    assert pairs.image_ids == (["500", "501", "503"] if with_filepath else ["1000", "1001", "1003"])
    assert pairs.relevance == [[0, 1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11, 12, 13]]
    assert pairs.captions[5] == "caption 0 of image 1"  # stripped
    assert pairs.caption_images()[9] == [2]
    assert pairs.summary()["captions_per_image_min"] == 3 and pairs.summary()["captions_per_image_max"] == 6
    img = pairs.load_images([1], size=8)
    assert img.shape == (1, 3, 8, 8) and abs(img[0, 0, 4, 4].item() - 10) <= 3  # JPEG: nearly exact
    assert load_karpathy(ann, split=None, image_root=root).n_images == 5


def test_karpathy_sentences_with_tokens_only_are_joined(tmp_path, png):
    png(tmp_path / "a.jpg")
    (tmp_path / "d.json").write_text(
        json.dumps(
            {
                "images": [
                    {"filename": "a.jpg", "split": "test", "sentences": [{"tokens": ["a", "dog", "runs"]}]}
                ]
            }
        )
    )
    assert load_karpathy(tmp_path / "d.json").captions == ["a dog runs"]


def test_coco_captions_loader_groups_annotations_by_image(tmp_path, png):
    for name in ("x.jpg", "y.jpg", "z.jpg"):
        png(tmp_path / "val2017" / name)
    doc = {
        "images": [
            {"id": 7, "file_name": "x.jpg"},
            {"id": 3, "file_name": "y.jpg"},
            {"id": 9, "file_name": "z.jpg"},
        ],
        "annotations": [
            {"image_id": 3, "id": 1, "caption": "y one"},
            {"image_id": 7, "id": 2, "caption": "x one"},
            {"image_id": 3, "id": 3, "caption": " y two "},
            {"image_id": 9, "id": 4, "caption": "z"},
            {"image_id": 3, "id": 5, "caption": "y three"},
        ],
    }
    ann = tmp_path / "captions_val2017.json"
    ann.write_text(json.dumps(doc))
    pairs = load_coco_captions(ann, image_root=tmp_path / "val2017")
    assert pairs.image_ids == ["7", "3", "9"]
    assert [[pairs.captions[c] for c in ids] for ids in pairs.relevance] == [
        ["x one"],
        ["y one", "y two", "y three"],
        ["z"],
    ]
    via_dispatch = load_pairs(ann, image_root=tmp_path / "val2017")
    assert via_dispatch.captions == pairs.captions and via_dispatch.relevance == pairs.relevance


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_table_loaders_group_rows_of_one_image_and_allow_varying_caption_counts(tmp_path, png, fmt):
    for name in ("a.png", "sub/b.png", "c.png"):
        png(tmp_path / "images" / name)
    rows = [
        ("a.png", "a red circle"),
        ("sub/b.png", "a blue square"),
        ("a.png", "a circle, red"),
        ("c.png", "a star"),
        ("a.png", "one circle"),
        ("sub/b.png", "a square"),
    ]
    path = tmp_path / f"pairs.{fmt}"
    if fmt == "csv":
        path.write_text("img,text,extra\n" + "".join(f'{i},"{t}",x\n' for i, t in rows))
    else:
        path.write_text("".join(json.dumps({"img": i, "text": t, "extra": 1}) + "\n" for i, t in rows))
    pairs = load_table(path, image_root=tmp_path / "images", image_field="img", caption_field="text")
    assert pairs.image_ids == ["a.png", "sub/b.png", "c.png"]
    assert pairs.captions == [t for _, t in rows]
    assert pairs.relevance == [[0, 2, 4], [1, 5], [3]]
    assert pairs.image_paths[1] == tmp_path / "images" / "sub" / "b.png"
    assert (
        load_pairs(path, image_root=tmp_path / "images", image_field="img", caption_field="text").relevance
        == pairs.relevance
    )


def test_table_loader_defaults_to_image_and_caption_columns_relative_to_the_file(tmp_path, png):
    png(tmp_path / "a.png")
    (tmp_path / "p.csv").write_text("image,caption\na.png,hello\n")
    pairs = load_pairs(tmp_path / "p.csv")
    assert pairs.captions == ["hello"] and pairs.image_paths == [tmp_path / "a.png"]


def test_from_shapes_keeps_images_in_memory_with_metadata(shapes_splits):
    exs = shapes_splits["train"]
    pairs = from_shapes(exs, name="s")
    assert pairs.image_array.shape == (7, 64, 64, 3) and pairs.image_paths is None
    assert pairs.n_captions == sum(len(ex.captions) for ex in exs)
    assert pairs.caption_meta[0]["zh"] == exs[0].captions[0].zh
    assert pairs.image_meta[2]["scene"] == exs[2].scene.to_dict()


# --- the ImageTextPairs container ----------------------------------------------------------------------


def _pairs_with_shared_caption():
    arr = np.arange(3 * 4 * 4 * 3, dtype=np.uint8).reshape(3, 4, 4, 3)
    # Caption 1 describes images 0 and 1 (an explicit relevance map, not caption // k).
    return ImageTextPairs(
        ["i0", "i1", "i2"],
        ["c0", "c1", "c2", "c3"],
        [[0, 1], [1, 2], [3]],
        image_array=arr,
        caption_meta=[{"k": n} for n in range(4)],
        image_meta=[{"m": n} for n in range(3)],
    )


def test_caption_images_and_pairs_follow_the_relevance_map():
    p = _pairs_with_shared_caption()
    assert p.caption_images() == [[0], [0, 1], [1], [2]]
    assert p.pairs() == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3)]


def test_subset_renumbers_caption_ids_from_zero_in_image_order():
    p = _pairs_with_shared_caption()
    s = p.subset([1, 0], name="sub")
    assert s.image_ids == ["i1", "i0"] and s.name == "sub"
    assert s.captions == ["c1", "c2", "c0"]
    assert s.relevance == [[0, 1], [2, 0]]
    assert [m["k"] for m in s.caption_meta] == [1, 2, 0] and [m["m"] for m in s.image_meta] == [1, 0]
    assert np.array_equal(s.image_array, p.image_array[[1, 0]])
    only = p.subset([2])
    assert only.captions == ["c3"] and only.relevance == [[0]]


def test_subset_of_file_backed_pairs_keeps_paths(tmp_path, png):
    paths = [png(tmp_path / f"{k}.png", colour=(k * 40, 0, 0)) for k in range(3)]
    p = ImageTextPairs(["0", "1", "2"], ["a", "b", "c"], [[0], [1], [2]], image_paths=paths)
    s = p.subset([2, 0])
    assert s.image_paths == [paths[2], paths[0]] and s.captions == ["c", "a"]


def test_materialize_decodes_and_resizes_file_images_into_memory(tmp_path, png):
    paths = [png(tmp_path / f"{k}.png", colour=(k * 40, 100, 0), size=(20, 10)) for k in range(3)]
    p = ImageTextPairs(["0", "1", "2"], ["a", "b", "c"], [[0], [1], [2]], image_paths=paths)
    m = p.materialize(16)
    assert m.image_paths is None and m.image_array.shape == (3, 16, 16, 3) and m.image_array.dtype == np.uint8
    assert np.array_equal(torch.from_numpy(m.image_array).permute(0, 3, 1, 2), p.load_images(size=16))
    assert m.image_array[2, 8, 8].tolist() == [80, 100, 0]
    assert m.materialize(16) is m  # already that size: nothing to do
    small = m.materialize(8)
    assert small.image_array.shape == (3, 8, 8, 3) and small.captions == p.captions


def test_pairs_constructor_checks_lengths():
    arr = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError):
        ImageTextPairs(["a"], ["x"], [[0]], image_array=arr)
    with pytest.raises(ValueError):
        ImageTextPairs(["a"], ["x"], [[0]])
    with pytest.raises(ValueError):
        ImageTextPairs(["a", "b"], ["x", "y"], [[0], [1]], image_array=arr, caption_meta=[{}])


@pytest.mark.parametrize(
    "relevance, n_captions, n_images, message",
    [
        ([[0], []], 1, 2, "image 1 has no relevant caption"),
        ([[0], [2]], 2, 2, "caption id 2 is out of range for 2 captions"),
        ([[0], [-1]], 2, 2, "out of range"),
        ([[0], [1.0]], 2, 2, "is not an integer"),
        ([[0], [True]], 2, 2, "is not an integer"),
        ([[0, 0], [1]], 2, 2, "lists a caption id twice"),
        ([[0], [1]], 3, 2, "caption 2 is relevant to no image (1 such captions)"),
        ([[0]], 1, 2, "has 1 entries for 2 images"),
    ],
)
def test_check_relevance_names_the_problem(relevance, n_captions, n_images, message):
    with pytest.raises(DataError) as e:
        check_relevance(relevance, n_captions, n_images)
    assert message in e.value.what


def test_check_relevance_accepts_numpy_integers_and_shared_captions():
    check_relevance([[np.int64(0), 1], [1]], 2, 2)


def test_loaders_write_nothing(tmp_path, png):
    png(tmp_path / "a.png")
    (tmp_path / "p.jsonl").write_text('{"image": "a.png", "caption": "x"}\n')
    before = snapshot(tmp_path)
    load_pairs(tmp_path / "p.jsonl")
    assert snapshot(tmp_path) == before
