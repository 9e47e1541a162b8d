"""Images decoded on demand by DataLoader workers (exact resume), and input from HF datasets and tar
shards."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignlab.core.errors import DataError
from alignlab.data.images import pil_to_uint8
from alignlab.data.loading import (
    FileImages,
    ImageBatchLoader,
    load_hf,
    load_tar_shards,
    open_image_text,
)
from alignlab.data.pairs import ImageTextPairs, from_shapes, save_karpathy
from alignlab.data.shapes import ShapesConfig, ShapesWorld
from alignlab.train.loop import StopTraining

SIZES = {"train": 40, "val": 12, "test": 12}


@pytest.fixture(scope="module")
def shapes():
    world = ShapesWorld(ShapesConfig(image_size=64, captions_per_image=2))
    return {
        split: from_shapes(world.generate(n, 5, split), name=f"shapes-{split}") for split, n in SIZES.items()
    }


@pytest.fixture(scope="module")
def karpathy(tmp_path_factory, shapes):
    out = tmp_path_factory.mktemp("karpathy")
    save_karpathy(out, shapes)
    return out


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(root: Path, shapes: dict[str, ImageTextPairs]) -> Path:
    """One folder per split; two shards each: one written by webdataset's TarWriter, one by tarfile."""
    wds = pytest.importorskip("webdataset")
    for split, pairs in shapes.items():
        (root / split).mkdir(parents=True)
        half = pairs.n_images // 2
        with wds.TarWriter(str(root / split / "shard-000.tar")) as sink:
            for i in range(half):
                caps = [pairs.captions[c] for c in pairs.relevance[i]]
                sink.write(
                    {
                        "__key__": f"{split}/{i:05d}",
                        "png": _png(pairs.image_array[i]),
                        "json": json.dumps({"captions": caps}).encode(),
                    }
                )
        with tarfile.open(root / split / "shard-001.tar", "w") as tar:
            for i in range(half, pairs.n_images):
                key = f"{split}/{i:05d}"
                _add(tar, f"{key}.png", _png(pairs.image_array[i]))
                _add(
                    tar,
                    f"{key}.json",
                    json.dumps({"captions": [pairs.captions[c] for c in pairs.relevance[i]]}).encode(),
                )
    return root


def _same_pairs(got, want: ImageTextPairs) -> None:
    assert got.n_images == want.n_images
    for i in range(want.n_images):
        assert [got.captions[c] for c in got.relevance[i]] == [want.captions[c] for c in want.relevance[i]]


# --- the loader ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_equal_the_in_memory_images_in_and_out_of_order(karpathy, workers):
    pairs = open_image_text(karpathy, "train")
    memory = torch.from_numpy(pairs.materialize(32).image_array).permute(0, 3, 1, 2)
    perm = np.random.default_rng(0).permutation(pairs.n_images)

    def batch_indices(epoch, index):
        return np.roll(perm, epoch)[index * 8 : (index + 1) * 8]

    loader = ImageBatchLoader(pairs.images, 32, batch_indices, lambda epoch: 5, num_workers=workers)
    order = [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
        (1, 0),
        (1, 1),
        (1, 3),
        (0, 2),
        (1, 4),
    ]  # jumps restart it
    for epoch, index in order:
        assert torch.equal(loader.get(epoch, index), memory[batch_indices(epoch, index)])
    assert loader.state_dict() == {"epoch": 1, "batch": 5}
    with pytest.raises(IndexError):
        loader.get(1, 5)
    loader.close()


@pytest.mark.parametrize("workers", [0, 1])
def test_a_missing_image_is_one_data_error_even_from_a_worker(tmp_path, workers):
    good = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    loader = ImageBatchLoader(
        FileImages([good, tmp_path / "gone.png"]), 8, lambda e, b: [0, 1], lambda e: 1, num_workers=workers
    )
    with pytest.raises(DataError, match="image not found") as e:
        loader.get(0, 0)
    assert str(e.value) == f"image not found ({tmp_path / 'gone.png'}); check the image root and file name"


# --- training from files: bounded memory, exact resume with workers -------------------------------------


def _run_config(path: Path, workers: int):
    from alignlab.retrieval.training import load_run_config

    return load_run_config(
        {
            "model_config": {"width": 32, "embed_dim": 32, "text_layers": 1},
            "data": {"source": "path", "path": str(path), "num_workers": workers},
            "train": {
                "epochs": 2,
                "batch_size": 8,
                "lr": 0.003,
                "warmup_steps": 0,
                "log_every": 1,
                "checkpoint_every": 3,
                "select_metric": "rsum",
            },
        }
    )


def test_training_from_files_streams_images_and_resumes_exactly_with_workers(karpathy, tmp_path):
    from alignlab.retrieval.training import DualContrastiveTask, load_path_splits, run_retrieval

    data = load_path_splits(_run_config(karpathy, 0).data)
    assert data["train"].image_array is None  # the training split is not decoded into memory
    memory = {**data, "train": data["train"].materialize(64)}
    ref = run_retrieval(_run_config(karpathy, 0), tmp_path / "memory", data=memory)

    def crash(state):
        if state["step"] == 7:  # one step after the checkpoint at step 6, in epoch 2
            raise StopTraining

    with pytest.raises(StopTraining):
        run_retrieval(_run_config(karpathy, 2), tmp_path / "stream", data=data, callbacks=[crash])
    ck = torch.load(tmp_path / "stream" / "ckpt" / "last.pt", weights_only=True)
    assert ck["task"] == {"loader": {"epoch": 1, "batch": 1}}  # the sampler's position: epoch 2, batch 2
    resumed = run_retrieval(_run_config(karpathy, 1), tmp_path / "stream", data=data)  # other worker count
    assert resumed["dev_curve"] == ref["dev_curve"]
    assert resumed["metrics"] == ref["metrics"]
    task = DualContrastiveTask(_model(), data["train"], torch.nn.Identity(), 8, 0)
    assert task.images is None  # what the task keeps: no decoded split


def _model():
    from alignlab.data.text import WordTokenizer
    from alignlab.models.factory import build_model

    return build_model(
        "tiny-dual", {"width": 32, "embed_dim": 32, "text_layers": 1}, WordTokenizer.build(["a red square"])
    )


# --- tar shards ---------------------------------------------------------------------------------------


def test_tar_shards_give_the_captions_relevance_and_images_written(tmp_path, shapes):
    root = write_shards(tmp_path / "shards", shapes)
    got = load_tar_shards(root, "test")
    _same_pairs(got, shapes["test"])
    assert np.array_equal(got.to_pairs(64).image_array, shapes["test"].image_array)
    assert open_image_text(root / "test" / "shard-001.tar", None).n_images == SIZES["test"] // 2
    assert open_image_text(str(root / "test" / "shard-{000..001}.tar"), None).n_images == SIZES["test"]


def test_bad_tar_shards_are_data_errors_that_name_the_sample(tmp_path):
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        _add(tar, "s1.png", _png(np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(DataError, match="sample has no caption") as e:
        load_tar_shards(tmp_path / "a.tar")
    assert "a.tar:s1" in str(e.value)
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as tar:
        _add(tar, "s1.txt", b"a caption")
    with pytest.raises(DataError, match="not an uncompressed tar"):
        load_tar_shards(tmp_path / "b.tar.gz")
    with tarfile.open(tmp_path / "c.tar", "w") as tar:
        _add(tar, "s1.json", b'{"title": "x"}')
    with pytest.raises(DataError, match="no 'caption'"):
        load_tar_shards(tmp_path / "c.tar")


# --- Hugging Face datasets ------------------------------------------------------------------------------


def _hf_dataset(pairs: ImageTextPairs, one_row_per_caption: bool):
    datasets = pytest.importorskip("datasets")
    images = [Image.fromarray(a) for a in pairs.image_array]
    if one_row_per_caption:
        rows = [(i, pairs.captions[c]) for i in range(pairs.n_images) for c in pairs.relevance[i]]
        table = {
            "image": [images[i] for i, _ in rows],
            "caption": [c for _, c in rows],
            "image_id": [f"img{i}" for i, _ in rows],
        }
    else:
        table = {"image": images, "caption": [[pairs.captions[c] for c in r] for r in pairs.relevance]}
    return datasets.Dataset.from_dict(table).cast_column("image", datasets.Image())


def test_a_saved_hf_dataset_dict_and_a_dataset_object_give_the_same_pairs(tmp_path, shapes):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(
        {"train": _hf_dataset(shapes["train"], False), "validation": _hf_dataset(shapes["val"], True)}
    )
    dd.save_to_disk(str(tmp_path / "hf"))
    val = open_image_text(tmp_path / "hf", "val")  # "val" finds the "validation" split
    _same_pairs(val, shapes["val"])
    assert np.array_equal(val.to_pairs(64).image_array, shapes["val"].image_array)
    obj = load_hf(dd["train"])
    _same_pairs(obj, shapes["train"])
    small = obj.to_pairs(32).image_array[3]
    assert np.array_equal(
        small, pil_to_uint8(Image.fromarray(shapes["train"].image_array[3]), 32).permute(1, 2, 0).numpy()
    )
    with pytest.raises(DataError, match="no column 'text'"):
        load_hf(dd["train"], caption_column="text")
    with pytest.raises(DataError, match="no split 'test'"):
        load_hf(tmp_path / "hf", "test")


@pytest.mark.parametrize("kind", ["tar", "hf"])
def test_a_run_trains_from_tar_shards_or_a_saved_hf_dataset(tmp_path, shapes, kind):
    from alignlab.retrieval.training import run_retrieval

    if kind == "tar":
        path = write_shards(tmp_path / "shards", shapes)
    else:
        datasets = pytest.importorskip("datasets")
        path = tmp_path / "hf"
        datasets.DatasetDict({s: _hf_dataset(p, False) for s, p in shapes.items()}).save_to_disk(str(path))
    cfg = _run_config(path, 1)
    cfg.train.epochs = 1
    result = run_retrieval(cfg, tmp_path / "run")
    assert result["steps"] == SIZES["train"] // 8
    assert result["data"].endswith(f":{SIZES['test']}")
    assert 0 <= result["metrics"]["rsum"] <= 600


def test_eval_retrieval_reads_tar_shards_and_gives_the_in_memory_numbers(tmp_path, shapes, capsys):
    """`alignlab eval retrieval --data <shards>` equals evaluating the same pairs held in memory."""
    from alignlab.cli import main
    from alignlab.core.io import read_json
    from alignlab.core.seed import set_seed
    from alignlab.models.factory import load_model
    from alignlab.retrieval.evaluate import evaluate_model

    root = write_shards(tmp_path / "shards", shapes)
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--model",
                "tiny-dual",
                "--data",
                str(root),
                "--split",
                "test",
                "--image-size",
                "64",
                "--seed",
                "3",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    in_memory = load_tar_shards(root, "test").to_pairs(64)
    assert np.array_equal(in_memory.image_array, shapes["test"].image_array)
    set_seed(3)
    expected = evaluate_model(load_model("tiny-dual"), in_memory, None).metrics
    got = read_json(out)["metrics"]
    assert {k: round(v, 6) for k, v in got.items() if "R@" in k} == {
        k: round(v, 6) for k, v in expected.items() if "R@" in k
    }
