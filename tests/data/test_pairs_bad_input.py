"""Bad data: every loader names the file and the line or record; check_data lists every problem at once."""

from __future__ import annotations

import json

import pytest
from datahelpers import snapshot, write_png

from alignlab.core.errors import DataError
from alignlab.data.pairs import (
    ImageTextPairs,
    check_data,
    load_coco_captions,
    load_karpathy,
    load_pairs,
    load_table,
)


def _raises(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value)
    return e.value


# --- Karpathy ------------------------------------------------------------------------------------------


def _karpathy(tmp_path, images, make_files=True):
    for img in images:
        if make_files and isinstance(img, dict) and "filename" in img:
            write_png(tmp_path / img.get("filepath", "") / img["filename"])
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"images": images}))
    return path


def _img(name, *caps, split="test"):
    return {"filename": name, "split": split, "sentences": [{"raw": c} for c in caps]}


def test_karpathy_empty_caption_names_the_record(tmp_path):
    path = _karpathy(tmp_path, [_img("a.png", "fine"), _img("b.png", "ok", "  ")])
    e = _raises(load_karpathy, path)
    assert e.what == "empty caption" and e.where == f"{path}: images[1].sentences[1]"


def test_karpathy_entry_without_filename_or_sentences_is_named(tmp_path):
    path = _karpathy(tmp_path, [_img("a.png", "x"), {"split": "test", "sentences": [{"raw": "y"}]}])
    e = _raises(load_karpathy, path)
    assert "filename" in e.what and e.where == f"{path}: images[1]"
    path = _karpathy(tmp_path, [_img("a.png", "x"), _img("b.png")])
    e = _raises(load_karpathy, path)
    assert e.what == "image has no sentences" and e.where == f"{path}: images[1]"


def test_karpathy_missing_image_names_the_record_and_the_file(tmp_path):
    path = _karpathy(tmp_path, [_img("a.png", "x"), _img("gone.png", "y")], make_files=False)
    write_png(tmp_path / "a.png")
    e = _raises(load_karpathy, path)
    assert e.what == "image not found" and e.where == f"{path}: images[1] ({tmp_path / 'gone.png'})"
    # check_files=False defers the check to when the image is read, which still names the file.
    pairs = load_karpathy(path, check_files=False)
    e = _raises(pairs.load_images, [1])
    assert e.where == str(tmp_path / "gone.png")


def test_unreadable_image_is_reported_by_checking_and_by_reading(tmp_path):
    path = _karpathy(tmp_path, [_img("a.png", "x"), _img("bad.png", "y")], make_files=False)
    write_png(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    e = _raises(load_karpathy, path, check_images=True)
    assert e.what.startswith("unreadable image") and str(tmp_path / "bad.png") in e.where
    pairs = load_karpathy(path)  # by default only existence is checked up front
    e = _raises(pairs.load_images)
    assert e.what.startswith("cannot read image") and e.where == str(tmp_path / "bad.png")


def test_truncated_image_is_unreadable(tmp_path):
    good = write_png(tmp_path / "a.png", size=(64, 64))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    path = _karpathy(tmp_path, [_img("cut.png", "y")], make_files=False)
    _raises(load_karpathy, path, check_images=True)
    _raises(load_karpathy(path).load_images)


def test_karpathy_duplicate_images_are_named_with_both_records(tmp_path):
    path = _karpathy(tmp_path, [_img("a.png", "x"), _img("b.png", "y"), _img("a.png", "z")])
    e = _raises(load_karpathy, path)
    assert e.what == "duplicate image 'a.png' (also images[0])" and e.where == f"{path}: images[2]"
    # Different files with the same id (cocoid) are duplicates too.
    imgs = [dict(_img("a.png", "x"), cocoid=5), dict(_img("b.png", "y"), cocoid=5)]
    path = _karpathy(tmp_path, imgs)
    e = _raises(load_karpathy, path)
    assert "duplicate image id '5'" in e.what and e.where == f"{path}: images[1]"


def test_karpathy_unknown_split_is_an_error_that_lists_the_real_ones(tmp_path):
    path = _karpathy(tmp_path, [_img("a.png", "x", split="train"), _img("b.png", "y", split="test")])
    e = _raises(load_karpathy, path, split="dev")
    assert e.what == "no images in split 'dev'" and e.where == str(path)
    assert "train, val, test" in e.fix


def test_karpathy_file_that_is_not_json_or_has_no_images_is_refused(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('{"images": [\n  {"filename": "a.png",}\n]}')
    e = _raises(load_karpathy, p)
    assert e.where.startswith(f"{p}:2:")
    p.write_text('{"photos": []}')
    assert "no 'images' list" in _raises(load_karpathy, p).what


# --- COCO captions -------------------------------------------------------------------------------------


def _coco(tmp_path, images, annotations, files=("a.jpg", "b.jpg")):
    for f in files:
        write_png(tmp_path / f)
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


IMAGES = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}]


@pytest.mark.parametrize(
    "images, annotations, what, where",
    [
        (
            IMAGES,
            [{"image_id": 1, "caption": "x"}, {"image_id": 2, "caption": "  "}],
            "empty caption",
            "annotations[1]",
        ),
        (
            IMAGES,
            [{"image_id": 1, "caption": "x"}, {"image_id": 2, "caption": None}],
            "caption is NoneType, not text",
            "annotations[1]",
        ),
        (
            IMAGES,
            [{"image_id": 1, "caption": "x"}, {"image_id": 2}],
            "annotation needs 'image_id' and 'caption'",
            "annotations[1]",
        ),
        (
            IMAGES,
            [{"image_id": 1, "caption": "x"}, {"image_id": 3, "caption": "y"}],
            "annotation refers to unknown image id 3",
            "annotations[1]",
        ),
        (
            [*IMAGES, {"id": 1, "file_name": "b.jpg"}],
            [{"image_id": 1, "caption": "x"}, {"image_id": 2, "caption": "y"}],
            "duplicate image id 1",
            "images[2]",
        ),
        (
            [IMAGES[0], {"file_name": "b.jpg"}],
            [{"image_id": 1, "caption": "x"}],
            "image entry needs 'id' and 'file_name'",
            "images[1]",
        ),
        (IMAGES, [{"image_id": 1, "caption": "x"}], "image has no captions", "images[1]"),
    ],
)
def test_coco_bad_records_are_named(tmp_path, images, annotations, what, where):
    path = _coco(tmp_path, images, annotations)
    e = _raises(load_coco_captions, path)
    assert e.what == what and e.where == f"{path}: {where}"


def test_coco_missing_image_file_is_named(tmp_path):
    path = _coco(
        tmp_path, IMAGES, [{"image_id": 1, "caption": "x"}, {"image_id": 2, "caption": "y"}], files=("a.jpg",)
    )
    e = _raises(load_coco_captions, path)
    assert e.what == "image not found" and e.where == f"{path}: images[1] ({tmp_path / 'b.jpg'})"


# --- CSV and JSONL -------------------------------------------------------------------------------------


def _files(tmp_path, *names):
    for n in names:
        write_png(tmp_path / n)


def test_csv_empty_caption_bad_row_and_missing_column_name_the_line(tmp_path):
    _files(tmp_path, "a.png", "b.png")
    p = tmp_path / "d.csv"
    p.write_text("image,caption\na.png,fine\nb.png,\n")
    e = _raises(load_table, p)
    assert e.what == "empty caption" and e.where == f"{p}:3"
    p.write_text("image,caption\na.png,fine\n,no image\n")
    e = _raises(load_table, p)
    assert e.what == "empty image path" and e.where == f"{p}:3"
    p.write_text("image,caption\na.png,fine\nb.png,a, b\n")
    e = _raises(load_table, p)
    assert "more fields" in e.what and e.where == f"{p}:3"
    p.write_text("image,text\na.png,fine\n")
    e = _raises(load_table, p)
    assert "'caption'" in e.what and e.where == f"{p}:1"


def test_jsonl_bad_json_missing_field_empty_caption_and_missing_image_name_the_line(tmp_path):
    _files(tmp_path, "a.png")
    p = tmp_path / "d.jsonl"
    cases = [
        ('{"image": "a.png", "caption": "ok"}\n{"image": "a.png", "caption": "x"\n', "invalid JSON", 2),
        ('{"image": "a.png", "caption": "ok"}\n\n{"image": "a.png"}\n', "record lacks field 'caption'", 3),
        ('{"caption": "x"}\n', "record lacks field 'image'", 1),
        ('{"image": "a.png", "caption": "ok"}\n{"image": "a.png", "caption": ""}\n', "empty caption", 2),
        ('{"image": "a.png", "caption": "ok"}\n{"image": "a.png", "caption": 5}\n', "empty caption", 2),
        ('{"image": "a.png", "caption": "ok"}\n"just a string"\n', "expected a JSON object", 2),
        ('{"image": "a.png", "caption": "ok"}\n{"image": "zz.png", "caption": "x"}\n', "image not found", 2),
    ]
    for text, what, line in cases:
        p.write_text(text)
        e = _raises(load_table, p)
        assert e.what.startswith(what), (text, e)
        assert e.where.startswith(f"{p}:{line}"), (text, e)


def test_non_utf8_table_names_the_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"image,caption\na.png,caf\xe9\n")
    e = _raises(load_table, p)
    assert e.where == f"{p}:2" and "UTF-8" in e.what


def test_load_pairs_refuses_unknown_formats_and_missing_paths(tmp_path):
    (tmp_path / "d.txt").write_text("x")
    assert "unknown data format '.txt'" in _raises(load_pairs, tmp_path / "d.txt").what
    assert _raises(load_pairs, tmp_path / "nope.tsv").what == "data not found"
    (tmp_path / "empty").mkdir()
    assert _raises(load_pairs, tmp_path / "empty").what == "folder has no dataset.json"


def test_failed_loads_write_nothing(tmp_path):
    _files(tmp_path, "a.png")
    (tmp_path / "d.jsonl").write_text('{"image": "a.png", "caption": ""}\n')
    before = snapshot(tmp_path)
    _raises(load_pairs, tmp_path / "d.jsonl")
    assert snapshot(tmp_path) == before


# --- check_data: every problem in one pass -------------------------------------------------------------


def _wheres(problems):
    return sorted((p.where, p.what) for p in problems)


def test_check_data_lists_every_problem_of_a_karpathy_file(tmp_path):
    images = [
        _img("a.png", "fine"),
        _img("missing.png", "x"),
        _img("bad.png", "y", ""),
        _img("a.png", "dup"),
        {"split": "test"},
        _img("c.png"),
        _img("d.png", "ok", split="train"),
    ]
    path = _karpathy(tmp_path, [images[0], images[6]])
    path.write_text(json.dumps({"images": images}))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    summary, problems = check_data(path)
    p = str(path)
    assert _wheres(problems) == sorted(
        [
            (f"{p}: images[2].sentences[1]", "empty caption"),
            (f"{p}: images[3]", "duplicate image 'a.png' (also images[0])"),
            (f"{p}: images[4]", "image entry has no 'filename'"),
            (f"{p}: images[5]", "image has no sentences"),
            (f"{p}: images[1] ({tmp_path / 'missing.png'})", "image not found"),
            (f"{p}: images[2] ({tmp_path / 'bad.png'})", "unreadable image (UnidentifiedImageError)"),
        ]
    )
    assert summary["images"] == 4 and summary["captions"] == 4  # what could be read is still summarised


def test_check_data_lists_every_bad_line_of_a_jsonl_file(tmp_path):
    _files(tmp_path, "a.png", "b.png")
    (tmp_path / "bad.png").write_text("not an image")
    p = tmp_path / "d.jsonl"
    p.write_text(
        "\n".join(
            [
                '{"image": "a.png", "caption": "good"}',
                '{"image": "a.png", "caption": ',
                '{"image": "b.png", "caption": ""}',
                '{"caption": "no image"}',
                '{"image": "missing.png", "caption": "x"}',
                '{"image": "bad.png", "caption": "y"}',
                "[1]",
                '{"image": "b.png", "caption": "fine"}',
            ]
        )
        + "\n"
    )
    summary, problems = check_data(p)
    assert [pr.where.split(" ")[0] for pr in problems] == [f"{p}:{n}" for n in (2, 7, 3, 4, 5, 6)]
    whats = [pr.what for pr in problems]
    assert whats[:2] == ["invalid JSON: Expecting value", "expected a JSON object, found list"]
    assert whats[2:] == [
        "empty caption",
        "record lacks field 'image'",
        "image not found",
        "unreadable image (UnidentifiedImageError)",
    ]
    assert summary["images"] == 4 and summary["captions"] == 4


def test_check_data_lists_every_bad_row_of_a_csv_file(tmp_path):
    _files(tmp_path, "a.png")
    p = tmp_path / "d.csv"
    p.write_text("image,caption\na.png,good\na.png,\nb.png,x\na.png,too,many\n,empty path\n")
    _, problems = check_data(p)
    assert [(pr.where.split(" ")[0], pr.what) for pr in problems] == [
        (f"{p}:5", "row has more fields than the header"),
        (f"{p}:3", "empty caption"),
        (f"{p}:6", "empty image path"),
        (f"{p}:4", "image not found"),
    ]


def test_check_data_lists_every_problem_of_a_coco_file(tmp_path):
    path = _coco(
        tmp_path,
        [*IMAGES, {"id": 3, "file_name": "gone.jpg"}, {"id": 1, "file_name": "a.jpg"}],
        [
            {"image_id": 1, "caption": ""},
            {"image_id": 1, "caption": "ok"},
            {"image_id": 9, "caption": "x"},
            {"image_id": 3, "caption": "y"},
        ],
    )
    _, problems = check_data(path)
    p = str(path)
    assert _wheres(problems) == sorted(
        [
            (f"{p}: images[3]", "duplicate image id 1"),
            (f"{p}: annotations[0]", "empty caption"),
            (f"{p}: annotations[2]", "annotation refers to unknown image id 9"),
            (f"{p}: images[1]", "image has no captions"),
            (f"{p}: images[2] ({tmp_path / 'gone.jpg'})", "image not found"),
        ]
    )


def test_check_data_of_clean_data_finds_nothing(tmp_path):
    _files(tmp_path, "a.png", "b.png")
    (tmp_path / "d.csv").write_text("image,caption\na.png,x\nb.png,y\na.png,z\n")
    summary, problems = check_data(tmp_path / "d.csv")
    assert problems == [] and summary["images"] == 2 and summary["captions"] == 3


def test_check_data_reports_a_file_it_cannot_read_at_all(tmp_path):
    (tmp_path / "d.json").write_text("{ not json")
    summary, problems = check_data(tmp_path / "d.json")
    assert (
        summary is None and len(problems) == 1 and problems[0].where.startswith(f"{tmp_path / 'd.json'}:1:")
    )


def test_in_memory_pairs_with_a_bad_relevance_map_are_refused(tmp_path):
    import numpy as np

    e = _raises(
        ImageTextPairs,
        ["a", "b"],
        ["x", "y"],
        [[0], [0]],
        image_array=np.zeros((2, 4, 4, 3), np.uint8),
        name="mine",
    )
    assert e.what.startswith("caption 1 is relevant to no image") and e.where == "mine relevance"
