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
    DCDDataConfig,
    DCDRunConfig,
    DCDTask,
    TeacherRunConfig,
    load_dcd_data,
    run_dcd,
    torch_threads,
    train_teacher,
)
from alignlab.models.factory import build_model, load_checkpoint
from alignlab.retrieval.repro import compare
from alignlab.train.loop import StopTraining, TrainConfig

TINY_CROSS = {"width": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2, "fusion_layers": 1}
TINY_DUAL = {"width": 32, "embed_dim": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2}
DATA = DCDDataConfig(train=72, val=24, test=24)


def _cfg(**kw) -> DCDRunConfig:
    base = DCDRunConfig(student_config=dict(TINY_DUAL), data=DATA, pool_size=8, keep=3, dev_images=12, threads=1,
                        train=TrainConfig(epochs=2, batch_size=24, lr=3e-3, select_metric="rsum", log_every=1,
                                          checkpoint_every=2))
    return replace(base, **kw)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dcd") / "teacher"
    cfg = TeacherRunConfig(model_config=dict(TINY_CROSS), data=DATA, dev_images=12, threads=1,
                           pretrain_epochs=1, pretrain_images=24, pretrain_batch_size=24,
                           train=TrainConfig(epochs=1, batch_size=24, lr=2e-3, select_metric="rsum"))
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
            res = run_dcd(_cfg(teacher=f"ckpt:{teacher_dir}", seed=seed, **ARMS[arm]), tmp_path / arm / f"seed-{seed}",
                          teacher=teacher)
            assert {"metrics", "manifest", "dev_curve", "best", "diagnostics"} <= set(res)
            assert res["data"] == res_t["data"]  # same test set as the teacher: comparable
            pq = read_json(tmp_path / arm / f"seed-{seed}" / "per_query.json")
            assert len(pq["i2t_rank"]) == 24
            assert (res["teacher_pairs_scored"] > 0) == (arm == "dcd")
    c = compare(tmp_path / "no-kd", tmp_path / "dcd", n_resamples=200)
    assert c["seeds_a"] == 2 and c["seeds_b"] == 2 and "verdict" in c
    # the teacher's own run folder compares with a student's too
    assert compare(teacher_dir, tmp_path / "dcd" / "seed-0", n_resamples=100)["queries"] == len(pq["i2t_rank"]) + len(
        pq["t2i_rank"])


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
    tasks = {arm: DCDTask(_cfg(**ARMS[arm]), build_dual_student(teacher, TINY_DUAL), data["train"], ts, memo=memo)
             for arm in ("no-kd", "hard-negatives", "dcd", "dcd-released")}
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
    res = run_dcd(_cfg(student="shallow-cross", train=TrainConfig(epochs=1, batch_size=24, lr=3e-3,
                                                                  select_metric="rsum")),
                  tmp_path / "cross", teacher=teacher)
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
    rc = main(["distill", "dcd", "train", "--teacher", f"ckpt:{teacher_dir}", "--arm", "dcd", "--out", str(out),
               "--quiet", "--set", f"student_config={json.dumps(TINY_DUAL)}", "--set", "data.train=72",
               "--set", "data.val=24", "--set", "data.test=24", "--set", "train.epochs=1",
               "--set", "train.batch_size=24", "--set", "pool_size=8", "--set", "keep=3", "--set", "threads=1"])
    assert rc == 0 and (out / "results.json").is_file()
    rc = main(["distill", "bench", "--teacher", f"ckpt:{teacher_dir}", "--student", f"dual=ckpt:{out}",
               "--images", "30", "--teacher-rows", "10", "--out", str(tmp_path / "bench.json"), "--quiet"])
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
    rc = main(["distill", "dcd", "train", "--teacher", f"ckpt:{tmp_path / 'nothing'}", "--out", str(tmp_path / "y"),
               "--set", "keep=20", "--quiet"])
    assert rc == 2 and "pool size" in capsys.readouterr().err

