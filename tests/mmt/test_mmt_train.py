"""Training: loss goes down, same seed -> same model, run folders round-trip, visual pretraining labels."""

from __future__ import annotations

import pytest
import torch

from alignlab.core.errors import ConfigError, ModelError
from alignlab.data.shapes import Obj, Scene
from alignlab.mmt.model import MMTConfig, MMTModel
from alignlab.mmt.train import CELL_CLASSES, TrainConfig, cell_labels, load_run, save_run, train_model

TINY = dict(width=32, heads=2, encoder_layers=1, decoder_layers=1, max_tgt_len=40)
FAST = TrainConfig(epochs=2, batch_size=32, lr=3e-3, warmup_steps=5)


def _train(shapes_data, seed=0, **kw):
    torch.manual_seed(seed)
    m = MMTModel(MMTConfig(**TINY, **kw), shapes_data["src"], shapes_data["tgt"])
    log = train_model(m, shapes_data["train_pairs"][:160], FAST, seed=seed)
    return m, log


def test_training_lowers_the_loss_and_is_deterministic(shapes_data):
    m1, log1 = _train(shapes_data)
    m2, log2 = _train(shapes_data)
    assert log1[-1]["train_loss"] < log1[0]["train_loss"]
    assert [x["train_loss"] for x in log1] == [x["train_loss"] for x in log2]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    m3, _ = _train(shapes_data, seed=1)
    assert not torch.equal(m1.out.weight, m3.out.weight)


def test_an_interrupted_run_resumes_to_the_same_weights(shapes_data, tmp_path):
    """The shared loop's exact resume: stop in epoch 2 (5 steps per epoch), re-run the same call, and get the
    model of an uninterrupted run (the rerun continues from the checkpoint at the end of epoch 1)."""
    from alignlab.train.loop import StopTraining

    full, _ = _train(shapes_data)
    torch.manual_seed(0)
    m = MMTModel(MMTConfig(**TINY), shapes_data["src"], shapes_data["tgt"])
    import alignlab.mmt.train as mt

    calls = {"n": 0}
    original = mt._EpochLoss.__call__

    def stop_at_three(self, state):
        original(self, state)
        calls["n"] += 1
        if calls["n"] == 7:
            raise StopTraining

    mt._EpochLoss.__call__ = stop_at_three
    try:
        mt.train_model(m, shapes_data["train_pairs"][:160], FAST, seed=0, run_dir=tmp_path / "run")
    finally:
        mt._EpochLoss.__call__ = original
    assert not torch.equal(m.out.weight, full.out.weight)  # stopped early: not yet the full model
    torch.manual_seed(123)  # a different init: the checkpoint must overwrite it
    m2 = MMTModel(MMTConfig(**TINY), shapes_data["src"], shapes_data["tgt"])
    log = mt.train_model(m2, shapes_data["train_pairs"][:160], FAST, seed=0, run_dir=tmp_path / "run")
    assert [x["epoch"] for x in log] == [2]  # it resumed at epoch 2 rather than starting again
    assert all(torch.equal(a, b) for a, b in zip(m2.state_dict().values(), full.state_dict().values()))


def test_run_folder_round_trip_gives_identical_translations(shapes_data, tiny_encoder, tmp_path):
    from alignlab.mmt.evaluate import translate
    from alignlab.mmt.train import shapes_images

    enc, metrics = tiny_encoder
    visual = enc.features(shapes_images(shapes_data["train"] + shapes_data["test"]))
    torch.manual_seed(0)
    m = MMTModel(
        MMTConfig(**TINY, fusion="gated", visual_dim=enc.width, visual_tokens=enc.n_tokens),
        shapes_data["src"],
        shapes_data["tgt"],
    )
    train_model(m, shapes_data["train_pairs"][:64], TrainConfig(epochs=1, batch_size=32), visual=visual)
    save_run(
        tmp_path / "run", m, train_cfg=FAST, data={"kind": "test"}, visual_encoder=enc, visual_metrics=metrics
    )
    m2, enc2, conf = load_run(tmp_path / "run")
    assert conf["model"]["fusion"] == "gated" and enc2 is not None
    test = shapes_data["test"]
    srcs = [c.en for ex in test[:4] for c in ex.captions[:1]]
    v1 = enc.features(shapes_images(test[:4]))
    v2 = enc2.features(shapes_images(test[:4]))
    assert torch.allclose(v1, v2)
    assert translate(m, srcs, v1) == translate(m2, srcs, v2)


def test_bad_runs_and_missing_images_are_clear_errors(shapes_data, tmp_path):
    with pytest.raises(ModelError, match="not an MMT run folder"):
        load_run(tmp_path)
    m = MMTModel(MMTConfig(**TINY, fusion="prefix", visual_dim=8), shapes_data["src"], shapes_data["tgt"])
    with pytest.raises(ConfigError, match="needs visual features"):
        train_model(m, shapes_data["train_pairs"][:4], FAST)
    from alignlab.mmt.train import MMTPair

    with pytest.raises(ConfigError, match="has no image"):
        train_model(m, [MMTPair("a bat", "有一只蝙蝠")], FAST, visual=torch.zeros(1, 10, 8))


def test_cell_labels_name_shapes_and_senses():
    scene = Scene((Obj("circle", "red", "small", 0, 0), Obj("bat", "blue", "large", 2, 2, sense="bat.n.05")))
    labels = cell_labels(scene)
    assert (
        len(labels) == 9
        and labels[0] == CELL_CLASSES.index("circle")
        and labels[8] == CELL_CLASSES.index("bat.n.05")
        and labels[1:8] == [0] * 7
    )
    assert len(CELL_CLASSES) == 16


def test_visual_pretraining_reports_held_out_accuracy(tiny_encoder):
    enc, metrics = tiny_encoder
    assert set(metrics) >= {"cell_acc", "sense_acc", "val_images"} and 0 <= metrics["cell_acc"] <= 1
    assert not any(p.requires_grad for p in enc.parameters())  # frozen after pretraining
