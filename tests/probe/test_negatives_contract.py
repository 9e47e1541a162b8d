"""The probe's hard-negative fine-tuning through the training contract (models/base.py, issue 14).

* golden: for the tiny models the loss (and every gradient) through the contract equals, bit for bit, the
  computation the tasks ran before on the towers' internals (written out here, where internals are fine);
* a tiny random Hugging Face CLIP (dual) and BLIP ITM (cross), loaded through ``hf:<folder>``, fine-tune
  with hard negatives: finite losses, weights that change, a finished run loaded again;
* a model spec the trainer cannot train is refused before a run folder is written.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from alignlab.core.errors import AlignlabError, ConfigError, ModelError
from alignlab.data.pairs import from_shapes
from alignlab.data.shapes import ShapesConfig, ShapesWorld
from alignlab.data.text import split_words
from alignlab.models.factory import build_model, load_model
from alignlab.probe.negatives import (
    CrossHardNegativeTask,
    DualHardNegativeTask,
    ProbeTrainConfig,
    train_probe_model,
    trainable_kind,
)
from alignlab.train.loop import TrainConfig

from .conftest import TINY_CROSS, TINY_DUAL


def _pairs(n: int = 16, size: int = 64):
    return from_shapes(ShapesWorld(ShapesConfig(image_size=size)).generate(n, 0, "train"))


# --- golden: the contract computes what the internals computed ------------------------------------------


def _old_dual_loss(model, batch):
    """DualHardNegativeTask.loss as it was on the tiny towers (before the contract)."""
    images, texts, _, negs, positives, negs_true = batch
    hard = [n for n in negs if n is not None]
    x = model.image_tower.preprocess(images, model.device)
    out = model(x, *model.tokenize(list(texts) + hard))
    b = len(texts)
    logits = out["logit_scale"] * out["image_emb"] @ out["text_emb"].T
    target = torch.arange(b)
    off = positives.bool() & ~torch.eye(b, dtype=torch.bool)
    i2t = F.cross_entropy(logits.masked_fill(torch.cat([off, negs_true], dim=1), float("-inf")), target)
    t2i = F.cross_entropy(logits[:, :b].T.masked_fill(off.T, float("-inf")), target)
    return 0.5 * (i2t + t2i)


def _old_cross_loss(model, batch, k):
    """CrossHardNegativeTask.loss as it was on the tiny towers and ``fuse`` (before the contract)."""
    images, texts, _, negs, positives = batch
    b = len(texts)
    hard = [n for n in negs if n is not None]
    x = model.image_tower.preprocess(images, model.device)
    img_tok, _ = model.image_tower(x)
    ids, mask = model.tokenize(list(texts) + hard)
    txt_tok, _ = model.text_tower(ids, mask)
    k = min(k, b - 1)
    rows = torch.arange(b)
    others = (rows[:, None] + torch.arange(k + 1)[None, :]) % b
    hard_col = torch.full((b,), -1, dtype=torch.long)
    h = 0
    for r, n in enumerate(negs):
        if n is not None:
            hard_col[r] = b + h
            h += 1
    cand_t = torch.cat([others, hard_col[:, None]], dim=1) if h else others
    valid = cand_t >= 0
    ii, tt = rows[:, None].expand_as(cand_t)[valid], cand_t[valid]
    logits_t = torch.full(cand_t.shape, float("-inf"))
    logits_t[valid] = model.fuse(img_tok[ii], txt_tok[tt], mask[tt])
    pos = positives.bool()
    true_t = pos[rows[:, None], others]
    true_t[:, 0] = False
    if h:
        true_t = torch.cat([true_t, torch.zeros(b, 1, dtype=torch.bool)], dim=1)
    logits_t = logits_t.masked_fill(true_t, float("-inf"))
    ii2, tt2 = others.reshape(-1), rows[:, None].expand_as(others).reshape(-1)
    logits_i = model.fuse(img_tok[ii2], txt_tok[tt2], mask[tt2]).view(b, k + 1)
    true_i = pos[others, rows[:, None]]
    true_i[:, 0] = False
    logits_i = logits_i.masked_fill(true_i, float("-inf"))
    target = torch.zeros(b, dtype=torch.long)
    return 0.5 * (F.cross_entropy(logits_t, target) + F.cross_entropy(logits_i, target))


def _loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    loss = fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(model, new, old):
    l_new, g_new = _loss_and_grads(model, new)
    l_old, g_old = _loss_and_grads(model, old)
    assert torch.isfinite(l_new) and torch.equal(l_new, l_old)
    assert g_new.keys() == g_old.keys() and g_new
    for name, g in g_new.items():
        assert torch.equal(g, g_old[name]), name


def test_dual_loss_through_the_contract_is_bit_identical_to_the_tower_computation():
    pairs = _pairs(24)
    torch.manual_seed(0)
    model = build_model("tiny-dual", TINY_DUAL, texts=pairs.captions).train()
    task = DualHardNegativeTask(model, pairs, 12, seed=0, hard_negatives=True)
    batch = task.batch(0, 1)
    assert any(n is not None for n in batch[3])
    _assert_same(
        model, lambda: task.loss(model, batch)["contrastive_loss"], lambda: _old_dual_loss(model, batch)
    )


@pytest.mark.parametrize("dual_score", [False, True])
def test_cross_loss_through_the_contract_is_bit_identical_to_the_tower_computation(dual_score):
    pairs = _pairs(24)
    torch.manual_seed(0)
    model = build_model("tiny-cross", {**TINY_CROSS, "dual_score": dual_score}, texts=pairs.captions).train()
    if dual_score:  # a zero head would hide the fusion: give it weights
        torch.nn.init.normal_(model.head[1].weight, std=0.1)
    task = CrossHardNegativeTask(model, pairs, 12, seed=0, hard_negatives=True, sampled_negatives=3)
    batch = task.batch(0, 0)
    _assert_same(
        model, lambda: task.loss(model, batch)["match_loss"], lambda: _old_cross_loss(model, batch, 3)
    )


# --- Hugging Face models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_pairs():
    return _pairs(16, size=32)


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory, hf_pairs):
    pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
    from hfmodels import build_blip_itm, build_clip  # tests/train (on pytest's pythonpath)

    words = {w for c in hf_pairs.captions for w in split_words(c)}
    root = tmp_path_factory.mktemp("hf_probe")
    return {"clip": build_clip(root / "clip", words), "blip": build_blip_itm(root / "blip", words)}


def _cfg(arch: str, **kw) -> ProbeTrainConfig:
    train = TrainConfig(epochs=1, batch_size=8, lr=1e-2, warmup_steps=0, log_every=1)
    return replace(ProbeTrainConfig(arch=arch, hard_negatives=True, sampled_negatives=3, train=train), **kw)


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_hf_clip_fine_tunes_with_hard_negatives(hf_models, hf_pairs, tmp_path):
    spec = f"hf:{hf_models['clip']}"
    start = {k: v.clone() for k, v in load_model(spec).model.state_dict().items()}
    cfg = _cfg(spec)
    model, info = train_probe_model(cfg, hf_pairs, tmp_path / "run", resume=False)
    assert trainable_kind(model) == "dual" and not model.training
    assert info["steps"] == 2 and sum(info["negatives"].values()) == 16
    losses = _losses(tmp_path / "run")
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    changed = _changed(start, model.model.state_dict())
    assert any(k.startswith("vision_model.") for k in changed)
    assert any(k.startswith("text_model.") for k in changed)
    assert {"visual_projection.weight", "text_projection.weight", "logit_scale"} <= changed
    # A finished run is loaded, not retrained, with the trained weights.
    again, info2 = train_probe_model(cfg, hf_pairs, tmp_path / "run")
    assert info2["negatives"] == {}
    assert not _changed(model.model.state_dict(), again.model.state_dict())


def test_hf_blip_itm_fine_tunes_as_a_cross_encoder_with_hard_negatives(hf_models, hf_pairs, tmp_path):
    spec = f"hf:{hf_models['blip']}"
    start = {k: v.clone() for k, v in load_model(spec).model.state_dict().items()}
    model, info = train_probe_model(_cfg(spec), hf_pairs, tmp_path / "run", resume=False)
    assert trainable_kind(model) == "cross"
    assert info["steps"] == 2 and sum(info["negatives"].values()) == 16
    losses = _losses(tmp_path / "run")
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    changed = _changed(start, model.model.state_dict())
    assert any(k.startswith("vision_model.") for k in changed)
    assert any(k.startswith("text_encoder.") for k in changed)
    assert any(k.startswith("itm_head.") for k in changed)


def test_hf_task_losses_are_finite_and_reach_every_part(hf_models, hf_pairs):
    clip = load_model(f"hf:{hf_models['clip']}").train()
    task = DualHardNegativeTask(clip, hf_pairs, 8, seed=0)
    loss = task.loss(clip, task.batch(0, 0))["contrastive_loss"]
    loss.backward()
    assert torch.isfinite(loss) and clip.model.logit_scale.grad is not None
    blip = load_model(f"hf:{hf_models['blip']}").train()
    task = CrossHardNegativeTask(blip, hf_pairs, 8, seed=0, sampled_negatives=2)
    loss = task.loss(blip, task.batch(0, 0))["match_loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in blip.model.itm_head.parameters())


# --- refusals before any work ------------------------------------------------------------------------------


def test_a_spec_that_cannot_be_trained_is_refused_before_the_run_folder_is_written(tmp_path):
    for arch in ("nonsense", "hf:", "mystery:model", ""):
        with pytest.raises(ConfigError):
            ProbeTrainConfig(arch=arch)
    with pytest.raises(ConfigError, match="model_config"):
        ProbeTrainConfig(arch="hf:some/folder", model_config={"width": 8})
    with pytest.raises(AlignlabError):  # a folder that holds no model: loading fails, nothing written
        train_probe_model(ProbeTrainConfig(arch=f"hf:{tmp_path / 'missing'}"), _pairs(4), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ModelError, match="neither a dual nor a cross encoder"):
        trainable_kind(object())


# --- DDP: each rank's loss through one DDP forward, gradients averaged ------------------------------------


def _ddp_setup(kind: str):
    pairs = _pairs(16, size=32)
    torch.manual_seed(0)
    if kind == "dual":
        model = build_model("tiny-dual", {**TINY_DUAL, "image_size": 32}, texts=pairs.captions).train()
        return model, DualHardNegativeTask(model, pairs, 8, seed=0), "contrastive_loss"
    model = build_model("tiny-cross", {**TINY_CROSS, "image_size": 32}, texts=pairs.captions).train()
    return model, CrossHardNegativeTask(model, pairs, 8, seed=0, sampled_negatives=2), "match_loss"


def _task_loss(task, model, batch, key):
    return task.loss(model, batch)[key]


def _ddp_worker(rank: int, world: int, out: str) -> None:
    from alignlab.train import distributed as ddp_

    for kind in ("dual", "cross"):
        model, task, key = _ddp_setup(kind)
        wrapped = ddp_.DDPModel(model)
        loss = task.loss(wrapped, task.local_batch(0, 0, rank, world))[key]
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"loss": loss.detach(), "grads": grads}, f"{out}/{kind}-{rank}.pt")


def test_under_ddp_each_rank_trains_its_slice_and_the_gradients_are_averaged(tmp_path):
    from alignlab.train.distributed import spawn

    spawn(_ddp_worker, 2, str(tmp_path))
    for kind in ("dual", "cross"):
        model, task, key = _ddp_setup(kind)
        full = task.batch(0, 0)
        refs = []
        for rank in range(2):
            local = task.local_batch(0, 0, rank, 2)
            assert len(local) == len(full) and len(local[1]) == 4 and local[4].shape == (4, 4)
            if kind == "dual":  # the hard-negative columns of its own captions
                assert local[5].shape == (4, sum(n is not None for n in local[3]))
            refs.append(_loss_and_grads(model, functools.partial(_task_loss, task, model, local, key)))
        for rank in range(2):
            got = torch.load(tmp_path / f"{kind}-{rank}.pt")
            torch.testing.assert_close(got["loss"], refs[rank][0])
            assert got["grads"].keys() == refs[0][1].keys()
            for name, g in got["grads"].items():
                torch.testing.assert_close(g, (refs[0][1][name] + refs[1][1][name]) / 2, msg=f"{kind} {name}")
