"""DCD into a real (Hugging Face) dual-encoder student: a tiny random CLIP learns from a tiny random BLIP ITM.

Both models are built from their configs (hidden size 32, 2 layers, 32-pixel images, patch 8) with a
word-level tokenizer over the ShapesWorld vocabulary, saved with ``save_pretrained`` and loaded back
through ``hf:<folder>``, exactly as a downloaded CLIP and BLIP would be. The data is a small
near-duplicate ShapesWorld set at 32 pixels (so the processors do not resize).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from hfmodels import SIZE, build_blip_itm, build_clip  # noqa: E402  (tests/train, on pytest's pythonpath)

from alignlab.cli import main  # noqa: E402
from alignlab.core.errors import ConfigError, ResumeError  # noqa: E402
from alignlab.core.io import read_json  # noqa: E402
from alignlab.data.pairs import save_karpathy  # noqa: E402
from alignlab.data.text import split_words  # noqa: E402
from alignlab.distill.dcd.miner import TeacherScores  # noqa: E402
from alignlab.distill.dcd.students import is_trainable_dual, load_teacher  # noqa: E402
from alignlab.distill.dcd.train import (  # noqa: E402
    ARMS,
    DCDDataConfig,
    DCDRunConfig,
    DCDTask,
    build_student,
    load_dcd_data,
    run_dcd,
)
from alignlab.models.factory import load_model  # noqa: E402
from alignlab.retrieval.evaluate import evaluate_model  # noqa: E402
from alignlab.train.loop import StopTraining, TrainConfig  # noqa: E402

DATA = DCDDataConfig(train=48, val=24, test=24, image_size=SIZE)


@pytest.fixture(scope="module")
def data():
    return load_dcd_data(DATA)


@pytest.fixture(scope="module")
def models(tmp_path_factory, data) -> tuple[Path, Path]:
    words = {w for p in data.values() for c in p.captions for w in split_words(c)}
    root = tmp_path_factory.mktemp("hf_dcd")
    # One seed for both, CLIP's weights drawn first (the BLIP ITM continues the same random stream).
    return build_clip(root / "clip", words, seed=0), build_blip_itm(root / "blip", words, seed=None)


@pytest.fixture(scope="module")
def teacher(models):
    return load_teacher(f"hf:{models[1]}#itm-logit")


@pytest.fixture(scope="module")
def teacher_scores(teacher, data):
    return TeacherScores(teacher, data["train"])


def _cfg(models, **kw) -> DCDRunConfig:
    clip_dir, blip_dir = models
    base = DCDRunConfig(
        teacher=f"hf:{blip_dir}#itm-logit",
        student_init=f"hf:{clip_dir}",
        data=DATA,
        pool_size=8,
        keep=3,
        threads=1,
        train=TrainConfig(epochs=2, batch_size=12, lr=3e-3, select_metric="rsum", log_every=1),
    )
    return replace(base, **kw)


def _teacher_agreement(cfg, student, data, ts) -> float:
    """Mean Spearman correlation, over the epoch-0 training rows, of the student's and the teacher's
    scores of the same ``[positive, kept negatives]`` candidates."""
    task = DCDTask(cfg, student, data["train"], ts)
    student.eval()
    rhos = []
    with torch.no_grad():
        for i in range(task.num_batches(0)):
            b = task.batch(0, i)
            s = task.student_scores(student, b)["scores"].cpu()
            for srow, trow in zip(s, b.teacher, strict=True):
                ranks = torch.stack([srow.argsort().argsort(), trow.argsort().argsort()]).float()
                rhos.append(float(torch.corrcoef(ranks)[0, 1]))
    return float(np.mean(rhos))


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- training -----------------------------------------------------------------------------------------


def test_hf_student_trains_both_towers_and_scale_while_the_teacher_stays_frozen(
    models, teacher, teacher_scores, data, tmp_path
):
    cfg = _cfg(models)
    before_teacher = _state(teacher)
    init = build_student(cfg, teacher, data["train"])
    assert is_trainable_dual(init) and init.training  # built for training
    assert all(p.requires_grad for p in init.parameters())
    seen_modes: list[bool] = []
    res = run_dcd(
        cfg,
        tmp_path / "run",
        teacher=teacher,
        data=data,
        teacher_scores=teacher_scores,
        callbacks=[lambda st: seen_modes.append(st["model"].training)],
    )
    assert seen_modes and all(seen_modes)  # train mode during training steps
    trained = load_model(f"hf:{tmp_path / 'run' / 'student'}")
    a, b = init.model.state_dict(), trained.model.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert any(k.startswith("vision_model.") for k in changed)
    assert any(k.startswith("text_model.") for k in changed)
    assert {"visual_projection.weight", "text_projection.weight", "logit_scale"} <= changed
    after_teacher = teacher.state_dict()
    assert all(torch.equal(before_teacher[k], after_teacher[k]) for k in before_teacher)
    assert not teacher.training
    assert res["student_model"] == f"hf:{tmp_path / 'run' / 'student'}"
    assert res["teacher_pairs_scored"] > 0 and res["trainable_parameters"] == res["parameters"] > 0


def test_distillation_moves_the_student_towards_the_teacher_ranking(
    models, teacher, teacher_scores, data, tmp_path
):
    # The BLIP teacher is random, so its ranking of the candidates carries no ground truth: only
    # distillation can teach it. The same training without KD (random negatives, no teacher) is the control.
    train = TrainConfig(epochs=10, batch_size=12, lr=1e-2, select_metric=None, log_every=5)
    kd = _cfg(models, alpha=0.9, train=train)
    start = _teacher_agreement(kd, build_student(kd, teacher, data["train"]), data, teacher_scores)
    run_dcd(kd, tmp_path / "kd", teacher=teacher, data=data, teacher_scores=teacher_scores)
    control = _cfg(models, train=train, **ARMS["no-kd"])
    run_dcd(control, tmp_path / "no-kd", teacher=teacher, data=data, teacher_scores=teacher_scores)
    got = {
        name: _teacher_agreement(kd, load_model(f"hf:{tmp_path / name / 'student'}"), data, teacher_scores)
        for name in ("kd", "no-kd")
    }
    assert abs(start) < 0.1
    assert got["kd"] > start + 0.1
    assert got["kd"] > got["no-kd"] + 0.1
    log = [json.loads(line) for line in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]


# --- saving, evaluation, resume -------------------------------------------------------------------------


def test_saved_student_scores_like_the_best_checkpoint_and_reproduces_the_test_metrics(
    models, teacher, teacher_scores, data, tmp_path
):
    from safetensors.torch import load_file

    cfg = _cfg(models)
    run = tmp_path / "run"
    res = run_dcd(cfg, run, teacher=teacher, data=data, teacher_scores=teacher_scores)
    # The in-memory student after training = the start weights with best/ loaded into them.
    in_memory = build_student(cfg, teacher, data["train"])
    in_memory.load_state_dict(load_file(str(run / "best" / "model.safetensors")))
    in_memory.eval()
    saved = load_model(res["student_model"])
    test = data["test"]
    images, texts = test.load_images(range(8)), test.captions[:20]
    torch.testing.assert_close(saved.score(images, texts), in_memory.score(images, texts))
    assert saved.score_scale == pytest.approx(in_memory.score_scale)
    assert saved.score_scale != pytest.approx(
        load_model(cfg.student_init).score_scale
    )  # the scale was trained
    assert evaluate_model(saved, test).metrics == res["metrics"]


def test_interrupted_hf_run_resumes_to_the_same_student(models, teacher, teacher_scores, data, tmp_path):
    cfg = _cfg(
        models,
        train=TrainConfig(
            epochs=2, batch_size=12, lr=3e-3, select_metric="rsum", log_every=1, checkpoint_every=1
        ),
    )
    full = run_dcd(cfg, tmp_path / "full", teacher=teacher, data=data, teacher_scores=teacher_scores)

    def stop(state):
        if state["step"] == 3:
            raise StopTraining

    with pytest.raises(StopTraining):
        run_dcd(
            cfg, tmp_path / "cut", teacher=teacher, data=data, teacher_scores=teacher_scores, callbacks=[stop]
        )
    assert not (tmp_path / "cut" / "student").exists()
    resumed = run_dcd(cfg, tmp_path / "cut", teacher=teacher, data=data, teacher_scores=teacher_scores)
    assert resumed["metrics"] == full["metrics"]
    a = load_model(full["student_model"]).model.state_dict()
    b = load_model(resumed["student_model"]).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_student_folder_whose_files_changed(models, teacher, teacher_scores, data, tmp_path):
    import shutil

    clip_copy = tmp_path / "clip"
    shutil.copytree(models[0], clip_copy)
    cfg = _cfg(
        models,
        student_init=f"hf:{clip_copy}",
        train=TrainConfig(epochs=2, batch_size=12, lr=3e-3, select_metric="rsum", checkpoint_every=1),
    )

    def stop(state):
        if state["step"] == 2:  # after the checkpoint of step 1
            raise StopTraining

    with pytest.raises(StopTraining):
        run_dcd(
            cfg, tmp_path / "run", teacher=teacher, data=data, teacher_scores=teacher_scores, callbacks=[stop]
        )
    # Other weights under the same name: the checkpoint would silently overwrite them with the old run's.
    other = transformers.CLIPModel.from_pretrained(clip_copy)
    with torch.no_grad():
        other.logit_scale.add_(1.0)
    other.save_pretrained(clip_copy)
    with pytest.raises(ResumeError, match="other files or settings"):
        run_dcd(cfg, tmp_path / "run", teacher=teacher, data=data, teacher_scores=teacher_scores)
    # Starting again is allowed.
    res = run_dcd(
        cfg, tmp_path / "run", teacher=teacher, data=data, teacher_scores=teacher_scores, resume=False
    )
    assert res["steps"] == 8


# --- bad settings ---------------------------------------------------------------------------------------


def test_a_cross_encoder_or_feature_kd_is_refused_as_a_real_student(models, teacher, data):
    with pytest.raises(ConfigError, match="not a dual encoder that can be trained"):
        build_student(_cfg(models, student_init=f"hf:{models[1]}"), teacher, data["train"])  # BLIP ITM
    with pytest.raises(ValueError, match="feature KD needs a tiny dual student"):
        _cfg(models, kd="feature", negatives="random", weighting=False)


# --- the command line -------------------------------------------------------------------------------------


def test_cli_recipe_trains_a_clip_student_that_eval_retrieval_reads(models, data, tmp_path, capsys):
    folder = save_karpathy(
        tmp_path / "shapes", {"train": data["train"], "val": data["val"], "test": data["test"]}
    )
    clip_dir, blip_dir = models
    out = tmp_path / "run"
    rc = main(
        [
            "distill",
            "dcd",
            "train",
            "--teacher",
            f"hf:{blip_dir}#itm-logit",
            "--student-init",
            f"hf:{clip_dir}",
            "--set",
            "data.source=path",
            "--set",
            f"data.path={folder}",
            "--set",
            f"data.image_size={SIZE}",
            "--set",
            "pool_size=8",
            "--set",
            "keep=3",
            "--set",
            "train.epochs=1",
            "--set",
            "train.batch_size=12",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    assert f"student: hf:{out / 'student'}" in capsys.readouterr().out
    res = read_json(out / "results.json")
    assert res["student_init"] == f"hf:{clip_dir}" and res["manifest"]["device"] == "cpu"
    rc = main(
        [
            "eval",
            "retrieval",
            "--model",
            f"hf:{out / 'student'}",
            "--data",
            str(folder),
            "--split",
            "test",
            "--out",
            str(tmp_path / "eval.json"),
            "--quiet",
        ]
    )
    assert rc == 0
    metrics = read_json(tmp_path / "eval.json")["metrics"]
    for k in ("i2t_R@1", "t2i_R@1", "rsum"):
        assert metrics[k] == pytest.approx(res["metrics"][k])


# --- a Hugging Face cross encoder as teacher: the fast path, and training it -------------------------------


def test_hf_blip_itm_teacher_uses_the_fast_path_with_the_scores_of_score(teacher, teacher_scores, data):
    assert teacher_scores.kind == "cross"  # states once, the fusion per pair (models/base.py contract)
    img, txt = teacher_scores.states()
    assert len(img) == data["train"].n_images and len(txt) == data["train"].n_captions
    rng = np.random.default_rng(0)
    ii = rng.integers(0, data["train"].n_images, 10)
    cc = rng.integers(0, data["train"].n_captions, 10)
    fast = teacher_scores.pair_scores(ii, cc)
    slow = torch.stack(
        [
            teacher.score(data["train"].load_images([int(i)]), [data["train"].captions[c]])[0, 0]
            for i, c in zip(ii, cc)
        ]
    )
    torch.testing.assert_close(fast, slow.float().cpu(), rtol=1e-4, atol=1e-4)
    assert fast.std() > 0  # not all equal: the comparison means something
    # the probability mode is not a logit: it keeps the general (slow) path


def test_a_probability_itm_teacher_keeps_the_general_path(models, data):
    prob = load_teacher(f"hf:{models[1]}")  # mode itm: score() is a probability, the fusion a logit
    assert prob.score_semantics == "itm_probability"
    assert TeacherScores(prob, data["train"]).kind == "scorer"


def test_dcd_teacher_trainer_trains_a_hf_blip_itm(models, data, tmp_path):
    from alignlab.distill.dcd.train import TeacherRunConfig, train_teacher

    spec = f"hf:{models[1]}#itm-logit"
    cfg = TeacherRunConfig(
        model_config={"spec": spec},
        data=DATA,
        fusion="grid",
        pretrain_epochs=0,
        dev_images=12,
        threads=1,
        train=TrainConfig(epochs=1, batch_size=12, lr=1e-3, select_metric="rsum", log_every=1),
    )
    before = _state(load_teacher(spec))
    res = train_teacher(cfg, tmp_path / "teacher", data=data)
    assert res["steps"] > 0 and res["teacher_model"] == f"hf:{tmp_path / 'teacher' / 'teacher'}#itm-logit"
    trained = load_teacher(res["teacher_model"])
    after = trained.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("model.text_encoder.") for k in changed)
    assert any(k.startswith("model.vision_model.") for k in changed)
    assert any("itm_head" in k for k in changed)
    assert evaluate_model(trained, data["test"]).metrics == res["metrics"]
    # the trained teacher teaches a CLIP student through the fast path
    ts = TeacherScores(trained, data["train"])
    assert ts.kind == "cross"
    out = run_dcd(
        _cfg(models, teacher=res["teacher_model"], train=TrainConfig(epochs=1, batch_size=12, lr=3e-3)),
        tmp_path / "student",
        teacher=trained,
        data=data,
        teacher_scores=ts,
    )
    assert out["teacher_pairs_scored"] > 0


def test_a_hf_teacher_refuses_the_tiny_only_settings():
    from alignlab.distill.dcd.train import TeacherRunConfig

    with pytest.raises(ConfigError, match="stage 1"):
        TeacherRunConfig(model_config={"spec": "hf:x#itm-logit"}, fusion="grid", pretrain_epochs=2)
    with pytest.raises(ConfigError, match="no other keys"):
        TeacherRunConfig(model_config={"spec": "hf:x", "width": 32}, fusion="grid", pretrain_epochs=0)


# --- file-backed data: training images are read per batch, never materialised (issue 18) --------------


def test_a_tiny_student_trains_on_file_backed_pairs_batch_by_batch_and_resumes_exactly(
    models, teacher, data, tmp_path, monkeypatch
):
    from alignlab.data.pairs import ImageTextPairs
    from alignlab.distill.dcd.train import STUDENT_MODEL

    folder = save_karpathy(
        tmp_path / "shapes", {"train": data["train"], "val": data["val"], "test": data["test"]}
    )
    cfg = DCDRunConfig(
        teacher=f"hf:{models[1]}#itm-logit",
        data=DCDDataConfig(source="path", path=str(folder), image_size=SIZE),
        student_config={**STUDENT_MODEL, "image_size": SIZE},
        pool_size=8,
        keep=3,
        threads=1,
        train=TrainConfig(
            epochs=2, batch_size=12, lr=3e-3, select_metric="rsum", log_every=1, checkpoint_every=1
        ),
    )
    files = load_dcd_data(cfg.data)
    train = files["train"]
    assert train.image_array is None  # file-backed
    original = ImageTextPairs.materialize

    def guarded(self, size):
        if self is train:
            raise AssertionError("the training split was materialised")
        return original(self, size)

    monkeypatch.setattr(ImageTextPairs, "materialize", guarded)
    ts = TeacherScores(teacher, train)
    full = run_dcd(cfg, tmp_path / "full", teacher=teacher, data=files, teacher_scores=ts)
    assert full["steps"] == 8 and train.image_array is None

    def stop(state):
        if state["step"] == 3:
            raise StopTraining

    with pytest.raises(StopTraining):
        run_dcd(cfg, tmp_path / "cut", teacher=teacher, data=files, teacher_scores=ts, callbacks=[stop])
    resumed = run_dcd(cfg, tmp_path / "cut", teacher=teacher, data=files, teacher_scores=ts)
    assert resumed["metrics"] == full["metrics"]

    def losses(run):
        rows = [json.loads(x) for x in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    cut = losses("cut")
    assert cut and all(cut[k] == v for k, v in losses("full").items() if k in cut)

    # Two DataLoader workers decode the batches ahead of use: every batch through the loader, same numbers.
    from alignlab.data import loading

    served, get = [], loading.ImageBatchLoader.get
    monkeypatch.setattr(
        loading.ImageBatchLoader, "get", lambda self, e, i: served.append((e, i)) or get(self, e, i)
    )
    workers = replace(cfg, data=replace(cfg.data, num_workers=2))
    with_workers = run_dcd(workers, tmp_path / "workers", teacher=teacher, data=files, teacher_scores=ts)
    assert len(served) == full["steps"] and train.image_array is None
    assert with_workers["metrics"] == full["metrics"] and losses("workers") == losses("full")


def test_file_backed_batches_are_the_bits_of_the_materialised_split(data, tmp_path):
    from alignlab.data.pairs import load_pairs
    from alignlab.distill.dcd.train import SplitImages

    folder = save_karpathy(tmp_path / "shapes", {"train": data["train"]})
    train = load_pairs(folder, "train")
    streamed = SplitImages(train, SIZE)
    assert streamed.tensor is None
    held = SplitImages(train.materialize(SIZE), SIZE)
    idx = np.array([3, 0, 3, 7])
    assert torch.equal(streamed[idx], held[idx])
    assert torch.equal(streamed[2:6], held[2:6])


def test_the_tiny_teacher_trains_on_file_backed_pairs_with_loader_workers_to_the_same_numbers(
    data, tmp_path, monkeypatch
):
    """Both teacher stages (group-batch dual, then the fusion grid) read file-backed batches through
    DataLoader workers: every batch served by the loader, the same metrics and losses as without workers."""
    from alignlab.data import loading
    from alignlab.distill.dcd.train import TeacherRunConfig, train_teacher

    folder = save_karpathy(
        tmp_path / "shapes", {"train": data["train"], "val": data["val"], "test": data["test"]}
    )
    cfg = TeacherRunConfig(
        model_config={
            "width": 32,
            "image_channels": [8, 16],
            "text_layers": 1,
            "heads": 2,
            "fusion_layers": 1,
        },
        data=DCDDataConfig(source="path", path=str(folder), image_size=SIZE),
        fusion="grid",
        pretrain_epochs=1,
        pretrain_images=0,
        pretrain_batch_size=12,
        dev_images=12,
        threads=1,
        train=TrainConfig(epochs=1, batch_size=12, lr=2e-3, select_metric="rsum", log_every=1),
    )
    files = load_dcd_data(cfg.data)
    assert files["train"].image_array is None  # file-backed
    plain = train_teacher(cfg, tmp_path / "plain", data=files)
    served, get = [], loading.ImageBatchLoader.get
    monkeypatch.setattr(
        loading.ImageBatchLoader, "get", lambda self, e, i: served.append((e, i)) or get(self, e, i)
    )
    workers = replace(cfg, data=replace(cfg.data, num_workers=2))
    with_workers = train_teacher(workers, tmp_path / "workers", data=files)
    assert files["train"].image_array is None
    assert len(served) == plain["steps"] + plain["pretrain"]["best"]["step"] > plain["steps"] > 0
    assert with_workers["metrics"] == plain["metrics"]

    def losses(run):
        rows = [json.loads(x) for x in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    assert losses("workers") == losses("plain") and losses("plain")
