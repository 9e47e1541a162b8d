"""DCD runs end to end: run folders for repro compare, resume, shared pools, students, bad input, CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from alignlab.cli import main
from alignlab.core.errors import ConfigError, ModelError
from alignlab.core.io import read_json
from alignlab.data.text import WordTokenizer
from alignlab.distill.dcd.miner import TeacherScores
from alignlab.distill.dcd.students import (
    build_dual_student,
    build_shallow_cross,
    check_compatible,
    load_teacher,
)
from alignlab.distill.dcd.train import (
    ARMS,
    TEACHER_MODEL,
    DCDDataConfig,
    DCDRunConfig,
    DCDTask,
    TeacherHardTask,
    TeacherRunConfig,
    load_dcd_data,
    run_dcd,
    torch_threads,
    train_teacher,
    train_tower_dual,
)
from alignlab.models.factory import build_model, load_checkpoint
from alignlab.retrieval.repro import compare
from alignlab.train.loop import StopTraining, TrainConfig

TINY_CROSS = {"width": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2, "fusion_layers": 1}
TINY_DUAL = {"width": 32, "embed_dim": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2}
DATA = DCDDataConfig(train=72, val=24, test=24)


def _cfg(**kw) -> DCDRunConfig:
    base = DCDRunConfig(
        student_config=dict(TINY_DUAL),
        data=DATA,
        pool_size=8,
        keep=3,
        dev_images=12,
        threads=1,
        train=TrainConfig(
            epochs=2, batch_size=24, lr=3e-3, select_metric="rsum", log_every=1, checkpoint_every=2
        ),
    )
    return replace(base, **kw)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dcd") / "teacher"
    cfg = TeacherRunConfig(
        model_config=dict(TINY_CROSS),
        data=DATA,
        dev_images=12,
        threads=1,
        pretrain_epochs=1,
        pretrain_images=24,
        pretrain_batch_size=24,
        train=TrainConfig(epochs=1, batch_size=24, lr=2e-3, select_metric="rsum"),
    )
    train_teacher(cfg, out)
    return out


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    return load_teacher(f"ckpt:{teacher_dir}")


def test_teacher_and_students_write_run_folders_that_repro_compare_reads(teacher_dir, teacher, tmp_path):
    res_t = read_json(teacher_dir / "results.json")
    assert res_t["pretrain"]["images"] == 72 + 24  # towers pretrained on the training and the extra images
    assert res_t["pairs_scored"] == 24 * len(load_dcd_data(DATA)["test"].captions)
    for arm in ("no-kd", "dcd"):
        for seed in (0, 1):
            res = run_dcd(
                _cfg(teacher=f"ckpt:{teacher_dir}", seed=seed, **ARMS[arm]),
                tmp_path / arm / f"seed-{seed}",
                teacher=teacher,
            )
            assert {"metrics", "manifest", "dev_curve", "best", "diagnostics"} <= set(res)
            assert res["data"] == res_t["data"]  # same test set as the teacher: comparable
            pq = read_json(tmp_path / arm / f"seed-{seed}" / "per_query.json")
            assert len(pq["i2t_rank"]) == 24
            assert (res["teacher_pairs_scored"] > 0) == (arm == "dcd")
    c = compare(tmp_path / "no-kd", tmp_path / "dcd", n_resamples=200)
    assert c["seeds_a"] == 2 and c["seeds_b"] == 2 and "verdict" in c
    # the teacher's own run folder compares with a student's too
    assert compare(teacher_dir, tmp_path / "dcd" / "seed-0", n_resamples=100)["queries"] == len(
        pq["i2t_rank"]
    ) + len(pq["t2i_rank"])


def test_interrupted_dcd_run_resumes_to_the_same_metrics(teacher, tmp_path):
    full = run_dcd(_cfg(), tmp_path / "full", teacher=teacher)

    def crash(state):
        if state["step"] == 3:
            raise StopTraining

    with pytest.raises(StopTraining):
        run_dcd(_cfg(), tmp_path / "crash", teacher=teacher, callbacks=[crash])
    resumed = run_dcd(_cfg(), tmp_path / "crash", teacher=teacher)
    assert resumed["metrics"] == full["metrics"]
    assert resumed["dev_curve"] == full["dev_curve"]
    again = run_dcd(_cfg(), tmp_path / "full", teacher=teacher)  # finished: read back, not retrained
    assert again["manifest"]["finished_utc"] == full["manifest"]["finished_utc"]


def test_arms_see_the_same_pools_and_teacher_scores_and_differ_only_in_selection(teacher):
    with torch_threads(1):
        _check_shared_pools(teacher)


def _check_shared_pools(teacher):
    data = load_dcd_data(DATA)
    ts = TeacherScores(teacher, data["train"])
    memo: dict = {}
    tasks = {
        arm: DCDTask(_cfg(**ARMS[arm]), build_dual_student(teacher, TINY_DUAL), data["train"], ts, memo=memo)
        for arm in ("no-kd", "hard-negatives", "dcd", "dcd-released")
    }
    batches = {arm: t.batch(0, 1) for arm, t in tasks.items()}
    pos = batches["dcd"].candidates[:, 0]
    assert all(np.array_equal(b.candidates[:, 0], pos) for b in batches.values())
    assert np.array_equal(batches["dcd"].candidates, batches["hard-negatives"].candidates)
    assert np.array_equal(batches["dcd"].candidates, batches["dcd-released"].candidates)
    assert not np.array_equal(batches["dcd"].candidates, batches["no-kd"].candidates)
    assert batches["no-kd"].teacher is None
    scored = ts.pairs_scored
    tasks["dcd"].batch(0, 1)  # memoised: the teacher is not asked again
    assert ts.pairs_scored == scored
    # mined negatives are the teacher's top k of the pool; teacher scores stay aligned with them
    b = batches["dcd"]
    direct = ts.pair_scores(np.repeat(b.images, b.candidates.shape[1]), b.candidates.reshape(-1))
    assert torch.allclose(direct.view(b.candidates.shape), b.teacher)


def test_shallow_cross_student_shares_the_teachers_frozen_towers(teacher, tmp_path):
    res = run_dcd(
        _cfg(
            student="shallow-cross", train=TrainConfig(epochs=1, batch_size=24, lr=3e-3, select_metric="rsum")
        ),
        tmp_path / "cross",
        teacher=teacher,
    )
    student = load_checkpoint(tmp_path / "cross")
    assert student.config.fusion_layers == 1
    for a, b in zip(student.image_tower.state_dict().values(), teacher.image_tower.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(student.text_tower.state_dict().values(), teacher.text_tower.state_dict().values()):
        assert torch.equal(a, b)
    assert res["trainable_parameters"] < res["parameters"]
    assert not torch.equal(student.head[1].weight, teacher.head[1].weight)


def test_incompatible_students_and_bad_teachers_are_clear_errors(teacher, tmp_path):
    data = load_dcd_data(DATA)
    small = build_model("tiny-dual", {**TINY_DUAL, "image_size": 32}, teacher.tokenizer)
    with pytest.raises(ConfigError, match="image sizes"):
        check_compatible(teacher, small)
    other_tok = WordTokenizer.build(["a red circle"])
    narrow = build_model("tiny-dual", TINY_DUAL, other_tok)
    with pytest.raises(ConfigError, match="cannot spell"):
        check_compatible(teacher, narrow, captions=data["train"].captions)
    cross = build_shallow_cross(teacher)
    cross.tokenizer = other_tok
    with pytest.raises(ConfigError, match="tokenizer"):
        check_compatible(teacher, cross, shares_towers=True)
    with pytest.raises(ModelError, match="does not load"):
        load_teacher(f"ckpt:{tmp_path / 'missing'}")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text(json.dumps({"arch": "tiny-cross", "config": TINY_CROSS}))
    teacher.tokenizer.save(broken / "tokenizer.json")
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelError, match="does not load"):
        load_teacher(f"ckpt:{broken}")
    with pytest.raises(ModelError):
        build_shallow_cross(small)
    with pytest.raises(ConfigError, match="smaller than the pool size"):
        _cfg(pool_size=4, keep=4)


def test_cli_trains_a_student_and_benchmarks_it(teacher_dir, tmp_path, capsys):
    out = tmp_path / "student"
    rc = main(
        [
            "distill",
            "dcd",
            "train",
            "--teacher",
            f"ckpt:{teacher_dir}",
            "--arm",
            "dcd",
            "--out",
            str(out),
            "--quiet",
            "--set",
            f"student_config={json.dumps(TINY_DUAL)}",
            "--set",
            "data.train=72",
            "--set",
            "data.val=24",
            "--set",
            "data.test=24",
            "--set",
            "train.epochs=1",
            "--set",
            "train.batch_size=24",
            "--set",
            "pool_size=8",
            "--set",
            "keep=3",
            "--set",
            "threads=1",
        ]
    )
    assert rc == 0 and (out / "results.json").is_file()
    rc = main(
        [
            "distill",
            "bench",
            "--teacher",
            f"ckpt:{teacher_dir}",
            "--student",
            f"dual=ckpt:{out}",
            "--images",
            "30",
            "--teacher-rows",
            "10",
            "--out",
            str(tmp_path / "bench.json"),
            "--quiet",
        ]
    )
    assert rc == 0
    res = read_json(tmp_path / "bench.json")
    t, d = res["models"]["teacher"], res["models"]["dual"]
    assert t["pairs_fused"] == 30 * 150 and t["extrapolated"] and t["rows_timed"] == 10
    assert d["encodings"] == 30 + 150
    assert d["speedup_vs_teacher"] == pytest.approx(t["cpu_seconds"] / d["cpu_seconds"])  # by CPU time
    assert d["speedup_wall"] == pytest.approx(t["seconds"] / d["seconds"])
    assert "sub_metrics" in d and d["rsum_kept_pct"] >= 0
    capsys.readouterr()
    rc = main(["distill", "dcd", "train", "--arm", "dcd", "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 2 and "needs a teacher" in capsys.readouterr().err
    rc = main(
        [
            "distill",
            "dcd",
            "train",
            "--teacher",
            f"ckpt:{tmp_path / 'nothing'}",
            "--out",
            str(tmp_path / "y"),
            "--set",
            "keep=20",
            "--quiet",
        ]
    )
    assert rc == 2 and "pool size" in capsys.readouterr().err


# --- the teacher's recipe: a dual first, then the fusion on its hard negatives ------------------------

DUAL_SCORE_CROSS = {**TINY_CROSS, "dual_score": True, "head_pool": "mean"}


def _teacher_cfg(**kw) -> TeacherRunConfig:
    base = TeacherRunConfig(
        model_config=dict(DUAL_SCORE_CROSS),
        data=DATA,
        dev_images=12,
        threads=1,
        pretrain_epochs=2,
        pretrain_batch_size=24,
        hard_pool=6,
        hard_negatives=3,
        random_negatives=2,
        train=TrainConfig(epochs=2, batch_size=24, lr=3e-3, select_metric="rsum"),
    )
    return replace(base, **kw)


def test_default_teacher_is_a_dual_score_cross_encoder_trained_on_hard_negatives():
    cfg = TeacherRunConfig()
    assert cfg.fusion == "hard" and cfg.pretrain_epochs > 0 and not cfg.tune_towers
    assert TEACHER_MODEL["dual_score"] and cfg.model_config == TEACHER_MODEL


def test_hard_batches_hold_the_positive_first_and_only_false_negatives_from_the_duals_pool(tmp_path):
    cfg = _teacher_cfg()
    data = load_dcd_data(DATA)
    train = data["train"]
    tok = WordTokenizer.build(train.captions)
    with torch_threads(1):
        dual, _ = train_tower_dual(cfg, tok, train, data["val"], tmp_path / "dual")
        cross = build_model("tiny-cross", {**DUAL_SCORE_CROSS, "image_size": 64}, tok)
        cross.load_dual(dual)
        task = TeacherHardTask(cross, dual, train, cfg, batch_size=24)
        b = task.batch(1, 0)
    assert np.array_equal(b.captions[:, 0], b.positives) and np.array_equal(b.rivals[:, 0], b.images)
    truth = train.known_true(np.arange(train.n_images), np.arange(train.n_captions))
    # positives="truth" (default): any caption true of the image, not only its own ones
    assert all(truth[i, p] for i, p in zip(b.images, b.positives))
    drawn = [
        (i, p)
        for e in range(3)
        for j in range(task.num_batches(e))
        for i, p in zip(task.batch(e, j).images, task.batch(e, j).positives)
    ]
    assert any(p not in train.relevance[i] for i, p in drawn)  # ...so other images' true captions turn up
    own_task = TeacherHardTask(cross, dual, train, replace(cfg, positives="own"), batch_size=24)
    ob = own_task.batch(1, 0)
    assert all(p in train.sources[i] for i, p in zip(ob.images, ob.positives))
    # every negative left in the softmax is false of its image by the truth evaluator
    for r, i in enumerate(b.images):
        kept = b.captions[r, 1:][b.caption_false[r, 1:].numpy()]
        assert not truth[i, kept].any() and not set(kept) & set(train.relevance[i])
        masked = b.captions[r, 1:][~b.caption_false[r, 1:].numpy()]
        assert all(truth[i, c] or c in train.relevance[i] for c in masked)  # masked: only true ones
        kept_img = b.rivals[r, 1:][b.rival_false[r, 1:].numpy()]
        assert not truth[kept_img, b.positives[r]].any()
        # the hard part of the list comes from the dual's top captions among the false ones
        hard = b.captions[r, 1 : 1 + task.n_hard]
        assert set(hard) <= set(task.hard_captions[i])
    with torch.no_grad():
        sims = dual.encode_images(train.load_images([int(b.images[0])])) @ dual.encode_texts(train.captions).T
    false = np.flatnonzero(
        ~truth[b.images[0]] & ~np.isin(np.arange(train.n_captions), train.relevance[b.images[0]])
    )
    top = false[np.argsort(-sims[0, false].numpy(), kind="stable")[: cfg.hard_pool]]
    assert set(task.hard_captions[b.images[0]]) == set(top)
    again = task.batch(1, 0)  # a pure function of (seed, epoch, index): resumable
    assert np.array_equal(again.captions, b.captions) and np.array_equal(again.rivals, b.rivals)
    assert not np.array_equal(task.batch(2, 0).captions, b.captions)


def test_teacher_trains_only_its_fusion_on_top_of_the_stage_one_dual(tmp_path):
    res = train_teacher(_teacher_cfg(), tmp_path / "t")
    teacher = load_teacher(f"ckpt:{tmp_path / 't'}")
    dual = load_checkpoint(tmp_path / "t" / "pretrain" / "best")
    # towers, projections and scale are the stage-1 dual's best checkpoint, frozen through stage 2
    for name in ("image_tower", "text_tower", "image_proj", "text_proj"):
        for a, b in zip(
            getattr(teacher, name).state_dict().values(), getattr(dual, name).state_dict().values()
        ):
            assert torch.equal(a, b)
    assert torch.equal(teacher.logit_scale, dual.logit_scale)
    assert teacher.head[1].weight.abs().sum() > 0  # the fusion head learned (it starts at zero)
    # the teacher's score is the dual's plus the fusion's: the difference is the fusion alone
    test = load_dcd_data(DATA)["test"]
    imgs = test.load_images(range(4))
    diff = teacher.score(imgs, test.captions[:6]) - dual.score(imgs, test.captions[:6])
    x = teacher.image_tower.preprocess(imgs)
    ids, mask = teacher.tokenize(test.captions[:6])
    with torch.no_grad():
        it, _ = teacher.image_tower(x)
        tt, _ = teacher.text_tower(ids, mask)
        fusion = teacher.fusion_logits(
            it.repeat_interleave(6, 0), tt.repeat(4, 1, 1), mask.repeat(4, 1)
        ).view(4, 6)
    assert torch.allclose(diff, fusion, atol=1e-4)
    assert set(res["train_cpu_s"]) == {"data_s", "stage1_s", "stage2_s", "total_s"}
    assert res["train_cpu_s"]["total_s"] >= res["train_cpu_s"]["stage1_s"] > 0
    assert res["pretrain"]["groups"] and res["metrics"]["rsum"] > 0
    # the earlier recipe stays available by name
    grid = train_teacher(
        _teacher_cfg(
            fusion="grid",
            pretrain_epochs=0,
            model_config=dict(TINY_CROSS),
            train=TrainConfig(epochs=1, batch_size=24),
        ),
        tmp_path / "grid",
    )
    assert grid["pretrain"] is None and "stage1_s" not in grid["train_cpu_s"]


def test_bad_teacher_settings_are_clear_errors_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="fusion must be one of"):
        _teacher_cfg(fusion="all")
    with pytest.raises(ConfigError, match="exceeds hard_pool"):
        _teacher_cfg(hard_pool=2, hard_negatives=3)
    with pytest.raises(ConfigError, match="pretrain_epochs"):
        _teacher_cfg(pretrain_epochs=0)
    with pytest.raises(ConfigError, match="positives must be"):
        _teacher_cfg(positives="all")
    cross = build_model("tiny-cross", {**DUAL_SCORE_CROSS, "image_size": 64}, texts=["a red circle"])
    with pytest.raises(ModelError, match="shapes"):
        cross.load_dual(build_model("tiny-dual", {**TINY_DUAL, "width": 64}, texts=["a red circle"]))
    assert not (tmp_path / "t").exists()
