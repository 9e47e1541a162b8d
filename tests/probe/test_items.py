"""The frozen item format: round trip, content hash, and bad input naming the item and its line."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from alignlab.core.errors import AlignlabError, DataError
from alignlab.probe.items import ProbeItem, items_hash, load_probe, write_probe


def _write(tmp_path, items, image=True):
    if image:
        (tmp_path / "img.png").parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "img.png")
    return write_probe(tmp_path, items, {"source": "test"})


def _item(i=0, **kw):
    base = dict(
        id=f"it{i}",
        task="negation",
        category="affirmative_true",
        images=["img.png"],
        options=["the circle is red", "the circle is not red"],
        correct=0,
    )
    return ProbeItem(**{**base, **kw})


def _rewrite_line(path, line_no, change):
    lines = path.read_text().splitlines()
    rec = json.loads(lines[line_no - 1])
    change(rec)
    lines[line_no - 1] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")


def test_round_trip_keeps_items_and_hash(tmp_path):
    items = [_item(0), _item(1, correct=1, category="negated_true")]
    path = _write(tmp_path, items)
    ps = load_probe(tmp_path)
    assert [it.to_dict() for it in ps.items] == [it.to_dict() for it in items]
    assert ps.sha256 == items_hash(items) == json.loads((tmp_path / "probe.json").read_text())["sha256"]
    assert [it.line for it in ps.items] == [1, 2]
    assert ps.path == path


def test_hash_ignores_key_order_but_not_content(tmp_path):
    a = _item(0)
    assert items_hash([a]) == items_hash(
        [ProbeItem(**{k: v for k, v in reversed(list(a.to_dict().items()))})]
    )
    assert items_hash([a]) != items_hash([_item(0, correct=1)])


def test_items_edited_after_the_build_fail_the_hash_check(tmp_path):
    path = _write(tmp_path, [_item(0), _item(1)])
    _rewrite_line(path, 2, lambda r: r.update(correct=1))
    with pytest.raises(DataError, match="changed since they were built"):
        load_probe(tmp_path)
    assert load_probe(tmp_path, verify_hash=False).items[1].correct == 1


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(options=["only one"]), "at least 2 options"),
        (lambda r: r.update(correct=5), "out of range"),
        (lambda r: r.update(correct=-1), "out of range"),
        (lambda r: r.update(images=["missing.png"]), "not found"),
        (lambda r: r.update(extra=1), "unknown field"),
        (lambda r: r.update(task="counting"), "unknown task"),
        (lambda r: r.update(truth=[[True, True]]), "exactly one true option"),
        (lambda r: r.pop("correct"), "lacks field"),
    ],
)
def test_bad_items_name_the_item_and_the_line(tmp_path, change, message):
    path = _write(tmp_path, [_item(0), _item(1), _item(2)])
    _rewrite_line(path, 2, change)
    with pytest.raises(AlignlabError, match=message) as err:
        load_probe(tmp_path, verify_hash=False)
    assert "'it1'" in str(err.value) and f"{path}:2" in str(err.value)


def test_duplicate_ids_are_rejected(tmp_path):
    with pytest.raises(DataError, match="duplicate"):
        _write(tmp_path, [_item(0), _item(0)])


def test_pair_items_need_two_images_and_a_permutation(tmp_path):
    ok = _item(0, format="pair", images=["img.png", "img.png"], correct=[1, 0], category="p")
    _write(tmp_path, [ok])
    with pytest.raises(DataError, match="must be"):
        write_probe(tmp_path / "b", [_item(0, format="pair", images=["img.png", "img.png"], correct=[0, 0])])


def test_an_image_that_changed_after_the_build_is_refused(tmp_path):
    import hashlib

    from alignlab.probe.items import load_item_images

    _write(tmp_path, [])  # writes img.png
    sha = hashlib.sha256((tmp_path / "img.png").read_bytes()).hexdigest()
    write_probe(tmp_path, [_item(0, image_sha256=[sha])])
    ps = load_probe(tmp_path)
    assert load_item_images(ps, ps.items[0])[0].size == (8, 8)
    Image.new("RGB", (8, 8), (99, 0, 0)).save(tmp_path / "img.png")
    with pytest.raises(DataError, match="SHA-256") as err:
        load_item_images(ps, ps.items[0])
    assert "items.jsonl:1" in str(err.value)
