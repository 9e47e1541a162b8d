"""Image and item paths read from data files stay inside the data root unless --allow-outside-root."""

from __future__ import annotations

import json

import pytest
from datahelpers import write_png

from alignlab.cli import main
from alignlab.core.errors import DataError
from alignlab.core.io import resolve_inside
from alignlab.data.pairs import load_pairs


@pytest.fixture
def layout(tmp_path):
    """``data/`` (the root, with one image) and ``outside/x.png`` beside it."""
    data = tmp_path / "data"
    write_png(data / "in.png")
    (data / "sub").mkdir()
    write_png(tmp_path / "outside" / "x.png")
    return data


@pytest.mark.parametrize("ref", ["../outside/x.png", "sub/../../outside/x.png", "{abs}"])
def test_a_table_path_that_leaves_the_root_is_refused_with_file_line_and_the_flag(layout, ref):
    ref = ref.format(abs=layout.parent / "outside" / "x.png")
    csv = layout / "pairs.csv"
    csv.write_text(f"image,caption\nin.png,a red square\n{ref},a red square again\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_pairs(csv)
    assert e.value.where == f"{csv}:3"
    assert "leaves the data root" in e.value.what and "--allow-outside-root" in e.value.fix
    pairs = load_pairs(csv, allow_outside_root=True)
    assert (
        pairs.n_images == 2
        and pairs.image_paths[1].resolve() == (layout.parent / "outside" / "x.png").resolve()
    )


def test_karpathy_and_coco_entries_are_checked_too(layout):
    kp = layout / "dataset.json"
    kp.write_text(
        json.dumps(
            {
                "images": [
                    {"filename": "in.png", "split": "test", "sentences": [{"raw": "a red square"}]},
                    {
                        "filepath": "..",
                        "filename": "outside/x.png",
                        "split": "test",
                        "sentences": [{"raw": "a square"}],
                    },
                ]
            }
        )
    )
    with pytest.raises(DataError, match="leaves the data root") as e:
        load_pairs(layout)
    assert e.value.where == f"{kp}: images[1]"
    coco = layout / "captions.json"
    coco.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "/etc/passwd"}],
                "annotations": [{"image_id": 1, "caption": "text"}],
            }
        )
    )
    with pytest.raises(DataError, match="an absolute path '/etc/passwd' leaves the data root"):
        load_pairs(coco)


def test_a_symlink_out_of_the_root_is_followed_before_the_check(layout):
    (layout / "link").symlink_to(layout.parent / "outside")
    csv = layout / "pairs.jsonl"
    csv.write_text(json.dumps({"image": "link/x.png", "caption": "a square"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="leaves the data root"):
        load_pairs(csv)
    assert resolve_inside(layout, "in.png", where="w") == layout / "in.png"


def test_data_check_reports_every_escape_and_accepts_them_with_the_flag(layout, capsys):
    csv = layout / "pairs.csv"
    csv.write_text("image,caption\n../outside/x.png,one\nin.png,two\n/etc/hostname,three\n", encoding="utf-8")
    assert main(["data", "check", str(csv)]) == 2
    out = capsys.readouterr().out
    assert f"{csv}:2: a path '../outside/x.png' leaves the data root" in out
    assert f"{csv}:4: an absolute path '/etc/hostname' leaves the data root" in out
    csv.write_text("image,caption\n../outside/x.png,one\nin.png,two\n", encoding="utf-8")
    assert main(["data", "check", str(csv), "--allow-outside-root"]) == 0


def test_eval_retrieval_refuses_an_escape_in_one_line_before_building_a_model(layout, capsys):
    csv = layout / "pairs.csv"
    csv.write_text("image,caption\nin.png,one\n../outside/x.png,two\n", encoding="utf-8")
    assert main(["eval", "retrieval", "--model", "tiny-dual", "--data", str(csv), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: a path '../outside/x.png' leaves the data root") and f"({csv}:3)" in err
    assert err.count("\n") == 1


def _probe(folder, refs):
    from alignlab.probe.items import ProbeItem, write_probe

    items = [
        ProbeItem(
            id=f"i{k}",
            task="semantic_structure",
            category="c",
            images=[ref],
            options=["a red square", "square red a"],
            correct=0,
            source="captions",
        )
        for k, ref in enumerate(refs)
    ]
    return write_probe(folder, items)


def test_probe_items_cannot_point_outside_their_image_root(layout):
    from alignlab.probe.items import load_item_images, load_probe

    path = _probe(layout, ["in.png", "../outside/x.png"])
    with pytest.raises(DataError, match="leaves the data root") as e:
        load_probe(path)
    assert e.value.where == f"{path}:2"
    ps = load_probe(path, allow_outside_root=True)
    assert len(load_item_images(ps, ps.items[1])) == 1


def test_caption_probe_items_are_written_relative_to_the_data_root_and_load_back(layout):
    from alignlab.probe.items import load_probe
    from alignlab.probe.perturb import build_caption_items

    csv = layout / "caps.csv"
    csv.write_text("image,caption\nin.png,a brown dog runs on the green grass\n", encoding="utf-8")
    path, info = build_caption_items(csv, layout.parent / "probe", split=None, tagger="lexicon")
    rec = json.loads(path.read_text().splitlines()[0])
    assert rec["images"] == ["in.png"] and info["image_root"] == str(layout.resolve())
    assert load_probe(path).items[0].images == ["in.png"]


def test_aro_entries_are_refused_at_build_time(layout):
    from alignlab.probe.aro import build_aro_items

    rel = layout / "rel.json"
    rel.write_text(
        json.dumps(
            [
                {
                    "image_path": "../outside/x.png",
                    "relation_name": "on",
                    "true_caption": "the cat on the mat",
                    "false_caption": "the mat on the cat",
                }
            ]
        )
    )
    with pytest.raises(DataError, match="leaves the data root") as e:
        build_aro_items(layout.parent / "probe", relation_file=rel, image_root=layout)
    assert e.value.where == f"{rel}[0]"
    path, _ = build_aro_items(
        layout.parent / "probe", relation_file=rel, image_root=layout, allow_outside_root=True
    )
    assert path.is_file()


def test_training_commands_accept_outside_paths_only_when_the_user_allows_it(tmp_path, capsys):
    """`train` loads its data deep inside the run; --allow-outside-root reaches it without entering the
    config."""
    import json

    from alignlab.cli import main

    data = tmp_path / "data"
    assert (
        main(
            [
                "data",
                "shapes",
                "--out",
                str(data),
                "--train",
                "8",
                "--val",
                "4",
                "--test",
                "4",
                "--image-size",
                "32",
                "--quiet",
            ]
        )
        == 0
    )
    spec = json.loads((data / "dataset.json").read_text())
    first = spec["images"][0]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    moved = outside / first["filename"]
    (data / first["filepath"] / first["filename"]).rename(moved)
    first["filepath"], first["filename"] = (
        str(outside),
        first["filename"],
    )  # an absolute folder: outside the root
    (data / "dataset.json").write_text(json.dumps(spec))
    common = [
        "train",
        "--set",
        "data.source=path",
        "--set",
        f"data.path={data}",
        "--set",
        "train.epochs=1",
        "--set",
        "data.image_size=32",
        "--set",
        "model_config.image_size=32",
        "--set",
        "data.train=8",
        "--set",
        "train.batch_size=4",
        "--quiet",
    ]
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "refused")]) == 2
    assert "leaves the data root" in capsys.readouterr().err
    assert not (tmp_path / "refused" / "results.json").exists()
    assert main([*common, "--out", str(tmp_path / "allowed"), "--allow-outside-root"]) == 0
    assert (tmp_path / "allowed" / "results.json").exists()
    assert "outside" not in (tmp_path / "allowed" / "config.yaml").read_text()  # a permission, not a setting
