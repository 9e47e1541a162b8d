"""The shared training tasks (alignlab.train.tasks) through the model contract (models/base.py, issue 14).

* golden: for the tiny models, a task's loss and every gradient equal, bit for bit, what the tasks computed
  before on the towers' internals (written out here, where internals are allowed);
* ``run_retrieval`` trains a tiny random Hugging Face CLIP (dual) and BLIP ITM (cross) loaded through
  ``hf:<folder>``: finite losses, weights that change, ``results.json``, resume after an interruption;
* a scorer without the training contract is refused with a ModelError before anything trains, and an
  unknown model name with a ConfigError before a run folder exists.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from alignlab.core.errors import ConfigError, ModelError
from alignlab.core.io import read_json
from alignlab.data.pairs import from_shapes
from alignlab.data.shapes import ShapesConfig, ShapesWorld
from alignlab.data.text import WordTokenizer, split_words
from alignlab.models.base import DualEncoder
from alignlab.models.factory import build_model, load_model
from alignlab.retrieval.training import DataConfig, RetrievalRunConfig, load_run_data, run_retrieval
from alignlab.train.loop import StopTraining, TrainConfig
from alignlab.train.losses import build_loss, exclude_true
from alignlab.train.tasks import CrossMatchTask, DualContrastiveTask, check_trainable, dual_outputs

SIZE = 32
TINY = {"image_size": SIZE, "width": 32, "image_channels": [8, 16], "text_layers": 1, "heads": 2}


@pytest.fixture(scope="module")
def shapes():
    return from_shapes(ShapesWorld(ShapesConfig(image_size=SIZE)).generate(24, seed=0, split="train"))


def _grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.detach(), _grads(model)


def _assert_same(a, b):
    (la, ga), (lb, gb) = a, b
    assert torch.equal(la, lb), (float(la), float(lb))
    assert ga.keys() == gb.keys() and ga
    for k in ga:
        assert torch.equal(ga[k], gb[k]), k


@pytest.mark.parametrize("loss_name", ["infonce", "vse-max"])
def test_tiny_dual_loss_is_bit_identical_to_the_tower_formula(shapes, loss_name):
    torch.manual_seed(0)
    model = build_model("tiny-dual", {**TINY, "embed_dim": 16}, WordTokenizer.build(shapes.captions)).train()
    loss_fn = build_loss(loss_name, 0.2)
    task = DualContrastiveTask(model, shapes, loss_fn, batch_size=12, seed=1)
    batch = task.batch(0, 0)
    images, texts, _, positives = batch

    def old():  # the task before the contract: the towers' preprocessing and the model's forward
        x = model.image_tower.preprocess(images, model.device)
        out = model(x, *model.tokenize(texts))
        return sum(
            loss_fn(out["image_emb"], out["text_emb"], out["logit_scale"], positives=positives).values()
        )

    def new():
        return sum(task.loss(model, batch).values())

    _assert_same(_loss_and_grads(model, old), _loss_and_grads(model, new))
    out = dual_outputs(model, model.preprocess_images(images), model.tokenize(texts))
    assert torch.equal(out["logit_scale"], model.logit_scale.exp().clamp(max=100.0))
    assert out["logit_bias"] is None


def test_tiny_cross_loss_is_bit_identical_to_the_tower_formula(shapes):
    torch.manual_seed(0)
    model = build_model(
        "tiny-cross", {**TINY, "fusion_layers": 1, "pair_chunk": 40}, WordTokenizer.build(shapes.captions)
    ).train()
    task = CrossMatchTask(model, shapes, batch_size=12, seed=1)
    batch = task.batch(0, 0)
    images, texts, _, positives = batch
    assert bool((positives & ~torch.eye(12, dtype=torch.bool)).any())  # the masking is exercised

    def old():  # towers, then the all-pairs fusion in chunks of ~pair_chunk pairs, as the old _grid did
        x = model.image_tower.preprocess(images, model.device)
        ids, mask = model.tokenize(texts)
        img, _ = model.image_tower(x)
        txt, _ = model.text_tower(ids, mask)
        n, m = len(img), len(txt)
        step = max(1, model.config.pair_chunk // m)
        rows = []
        for i in range(0, n, step):
            it = img[i : i + step]
            k = len(it)
            rows.append(
                model.fuse(it.repeat_interleave(m, 0), txt.repeat(k, 1, 1), mask.repeat(k, 1)).view(k, m)
            )
        logits = torch.cat(rows)
        target = torch.arange(n)
        off = positives & ~torch.eye(n, dtype=torch.bool)
        return 0.5 * (
            F.cross_entropy(exclude_true(logits, off), target)
            + F.cross_entropy(exclude_true(logits.T, off.T), target)
        )

    def new():
        return sum(task.loss(model, batch).values())

    _assert_same(_loss_and_grads(model, old), _loss_and_grads(model, new))


class _ScoreOnly(DualEncoder):
    """A dual encoder that can only score: encode_* and nothing of the training contract."""

    name = "score-only"

    def encode_images(self, images):
        return F.normalize(torch.ones(len(images), 4), dim=-1)

    def encode_texts(self, texts):
        return F.normalize(torch.ones(len(texts), 4), dim=-1)


def test_a_model_without_the_training_contract_fails_before_training(shapes, tmp_path):
    model = _ScoreOnly()
    with pytest.raises(ModelError, match="cannot be trained as a dual encoder"):
        check_trainable(model)
    with pytest.raises(ModelError, match="embed_images"):
        DualContrastiveTask(model, shapes, build_loss("infonce"), batch_size=12, seed=0)
    with pytest.raises(ModelError, match="neither a dual nor a cross"):
        check_trainable(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="cannot train model"):
        RetrievalRunConfig(model="no-such-model")
    with pytest.raises(ConfigError, match="cannot train model"):
        RetrievalRunConfig(model="hf:")
    assert RetrievalRunConfig(model="hf:some/folder").model == "hf:some/folder"  # checked when loaded


# --- tiny Hugging Face models through run_retrieval -----------------------------------------------------

DATA = DataConfig(train=48, val=24, test=24, image_size=SIZE)


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
    from hfmodels import build_blip_itm, build_clip

    words = {w for p in load_run_data(DATA).values() for c in p.captions for w in split_words(c)}
    root = tmp_path_factory.mktemp("hf_models")
    return {"dual": build_clip(root / "clip", words), "cross": build_blip_itm(root / "blip", words)}


def _hf_cfg(folder, **kw) -> RetrievalRunConfig:
    return RetrievalRunConfig(
        model=f"hf:{folder}",
        data=DATA,
        train=TrainConfig(
            epochs=2, batch_size=16, lr=1e-3, warmup_steps=0, select_metric="rsum", log_every=1
        ),
        cross_dev_images=12,
        **kw,
    )


def _weights(spec: str, run_dir=None) -> dict[str, torch.Tensor]:
    model = load_model(spec)
    if run_dir is not None:
        from safetensors.torch import load_model as load_safetensors

        load_safetensors(model, str(run_dir / "final" / "model.safetensors"))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["dual", "cross"])
def test_hf_model_trains_through_run_retrieval_and_resumes(hf_models, kind, tmp_path):
    cfg = _hf_cfg(hf_models[kind])
    model = load_model(cfg.model)
    assert model.is_dual == (kind == "dual")

    res = run_retrieval(cfg, tmp_path / "full")
    saved = read_json(tmp_path / "full" / "results.json")
    assert saved["metrics"] == res["metrics"] and saved["model"] == cfg.model
    assert 0 <= res["metrics"]["i2t_R@1"] <= 100 and len(res["dev_curve"]) == 2
    logged = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    losses = [v for rec in logged for k, v in rec.items() if k.endswith("_loss")]
    assert len(losses) == res["steps"] == 6 and all(torch.isfinite(torch.tensor(losses)))
    before, after = _weights(cfg.model), _weights(cfg.model, tmp_path / "full")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and any("vision_model" in k for k in changed) and any("text" in k for k in changed)

    def crash(state):
        if state["step"] == 2:
            raise StopTraining

    with pytest.raises(StopTraining):
        run_retrieval(cfg, tmp_path / "crash", callbacks=[crash])
    assert not (tmp_path / "crash" / "results.json").exists()
    resumed = run_retrieval(cfg, tmp_path / "crash")
    assert resumed["metrics"] == res["metrics"] and resumed["dev_curve"] == res["dev_curve"]
    again = run_retrieval(cfg, tmp_path / "full")  # a finished run is not trained again
    assert again["metrics"] == res["metrics"]


def test_hf_dual_with_a_frozen_image_tower_trains_only_the_rest(hf_models, tmp_path):
    cfg = _hf_cfg(hf_models["dual"], freeze_image_tower=True)
    cfg = replace(cfg, train=replace(cfg.train, epochs=1, select_metric=None))
    run_retrieval(cfg, tmp_path / "frozen")
    before, after = _weights(cfg.model), _weights(cfg.model, tmp_path / "frozen")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith("model.vision_model.") for k in changed)


def test_adapter_options_that_do_not_fit_are_a_config_error(hf_models, tmp_path):
    cfg = _hf_cfg(hf_models["dual"], model_config={"no_such_option": 1})
    with pytest.raises(ConfigError, match="unknown option"):
        run_retrieval(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


# --- DDP (2 gloo processes): one step of a Hugging Face model with the global batch's negatives ----------

DDP_BATCH = 8  # the global batch: 4 images per rank


def _hf_task(kind: str, folder):
    model = load_model(f"hf:{folder}").train()
    train = load_run_data(DATA)["train"]
    if kind == "dual":
        task = DualContrastiveTask(model, train, build_loss("infonce", gather=True), DDP_BATCH, seed=3)
    else:
        task = CrossMatchTask(model, train, DDP_BATCH, seed=3, gather=True)
    return model, task


def _ddp_worker(rank: int, world: int, out: str, folders: dict[str, str]) -> None:
    from alignlab.train import distributed as ddp_

    for kind, folder in folders.items():
        model, task = _hf_task(kind, folder)
        wrapped = ddp_.DDPModel(model, find_unused_parameters=task.find_unused_parameters)
        terms = task.loss(wrapped, task.local_batch(0, 0, rank, world))
        sum(terms.values()).backward()
        value = ddp_.all_reduce_mean({k: float(v.detach()) for k, v in terms.items()})
        if rank == 0:
            torch.save({"loss": value, "grads": _grads(model)}, f"{out}/{kind}.pt")


def test_hf_models_under_ddp_step_like_one_process_with_the_global_batch(hf_models, tmp_path):
    from alignlab.train.distributed import spawn

    folders = {k: str(v) for k, v in hf_models.items()}
    spawn(_ddp_worker, 2, str(tmp_path), folders)
    for kind, folder in folders.items():
        got = torch.load(tmp_path / f"{kind}.pt", weights_only=True)
        model, task = _hf_task(kind, folder)
        terms = task.loss(model, task.batch(0, 0))
        sum(terms.values()).backward()
        for k, v in terms.items():
            assert got["loss"][k] == pytest.approx(float(v.detach()), rel=1e-5), kind
        want = _grads(model)
        assert got["grads"].keys() == want.keys(), kind
        for k in want:
            err = (got["grads"][k] - want[k]).norm()
            assert err <= 1e-4 * want[k].norm() + 1e-7, (kind, k, float(err))
