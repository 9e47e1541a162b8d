"""The jobs through the in-process engine (``--engine local``): the ambiguity tolerance with the real
encoder, and DCD training that reads mined teacher scores instead of running the teacher."""

from __future__ import annotations

import json

import pytest

from alignlab.cli import main


def test_gloss_scores_sharded_match_the_single_process_within_the_stated_tolerance(tmp_path, capsys):
    from alignlab.ambiguity.scale_job import TOLERANCE, compare_records
    from alignlab.ambiguity.wordnet import wordnet_available

    if not wordnet_available():
        pytest.skip("WordNet 3.0 is not installed")
    caps = [
        "A man swings a bat at the ball.",
        "Bats fly out of the cave at night.",
        "A woman sits on the bank of the river near the old mill.",
        "People wait in line at the bank.",
        "A crane lifts steel beams over the building site.",
        "A crane stands in the water.",
    ] * 2
    src = tmp_path / "caps.en"
    src.write_text("".join(c + "\n" for c in caps))
    assert main(["ambiguity", "score", str(src), "--out", str(tmp_path / "plain.jsonl"), "--quiet"]) == 0
    # shards of 5 put other captions in each encoder batch, and repeat captions the plain path reuses
    assert (
        main(
            [
                "ambiguity",
                "score",
                str(src),
                "--out",
                str(tmp_path / "local.jsonl"),
                "--engine",
                "local",
                "--rows-per-shard",
                "5",
                "--quiet",
            ]
        )
        == 0
    )
    assert "3 shard(s) run" in capsys.readouterr().out
    plain = (tmp_path / "plain.jsonl").read_text().splitlines()
    sharded = (tmp_path / "local.jsonl").read_text().splitlines()
    worst, other = compare_records(plain, sharded)
    assert other == 0 and worst <= TOLERANCE
    assert [json.loads(a)["line"] for a in sharded] == list(range(1, len(caps) + 1))
    # the comparison can fail: a flipped flag and a moved probability are both seen
    rec = json.loads(plain[2])
    rec["ambiguous"] = not rec["ambiguous"]
    rec["score"] += 1e-3
    worst, other = compare_records(plain, [*plain[:2], json.dumps(rec), *plain[3:]])
    assert other == 1 and worst == pytest.approx(1e-3)


def test_dcd_training_with_mined_scores_equals_training_that_runs_the_teacher(tmp_path):
    from dataclasses import replace

    from alignlab.core.errors import ConfigError
    from alignlab.core.seed import set_seed
    from alignlab.data.text import WordTokenizer
    from alignlab.distill.dcd.mine import load_mined, mine
    from alignlab.distill.dcd.miner import TeacherScores
    from alignlab.distill.dcd.students import load_teacher
    from alignlab.distill.dcd.train import DCDDataConfig, DCDRunConfig, load_dcd_data, run_dcd
    from alignlab.models.factory import build_model, save_model
    from alignlab.scale import EngineOptions
    from alignlab.train.loop import TrainConfig

    data_cfg = DCDDataConfig(train=48, val=12, test=12)
    data = load_dcd_data(data_cfg)
    set_seed(0)
    save_model(
        build_model(
            "tiny-cross",
            {"width": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2, "fusion_layers": 1},
            WordTokenizer.build(data["train"].captions),
        ),
        tmp_path / "teacher",
    )
    cfg = DCDRunConfig(
        teacher=f"ckpt:{tmp_path / 'teacher'}",
        data=data_cfg,
        pool_size=6,
        keep=2,
        threads=1,
        student_config={
            "width": 32,
            "embed_dim": 32,
            "image_channels": [8, 16, 32],
            "text_layers": 1,
            "heads": 2,
        },
        train=TrainConfig(epochs=2, batch_size=12, lr=3e-3, select_metric="rsum"),
    )
    report = mine(cfg, tmp_path / "mined", EngineOptions(engine="local", quiet=True), batches_per_shard=3)
    assert report.ran == report.shards
    plain = run_dcd(cfg, tmp_path / "plain")
    teacher = load_teacher(cfg.teacher)
    ts = TeacherScores(teacher, data["train"])
    memo = load_mined(tmp_path / "mined", cfg, ts, cfg.train.batch_size)
    mined = run_dcd(cfg, tmp_path / "with-mined", teacher=teacher, data=data, teacher_scores=ts, memo=memo)
    assert mined["metrics"] == plain["metrics"]
    assert plain["teacher_pairs_scored"] > 0 and mined["teacher_pairs_scored"] == 0  # the teacher never ran
    with pytest.raises(ConfigError, match="pool_size"):
        load_mined(tmp_path / "mined", replace(cfg, pool_size=5, keep=2), ts, cfg.train.batch_size)


def test_no_gather_leaves_the_scores_in_the_parquet_shards(tmp_path, capsys):
    from alignlab.ambiguity.wordnet import wordnet_available
    from alignlab.scale import read_output

    if not wordnet_available():
        pytest.skip("WordNet 3.0 is not installed")
    src = tmp_path / "caps.en"
    src.write_text("A bat flew out of the cave.\nA man sits on the bank.\nA crane lifts a beam.\n")
    out = tmp_path / "scores.jsonl"
    assert main(["ambiguity", "score", str(src), "--out", str(out), "--method", "mfs", "--quiet"]) == 0
    plain = out.read_text().splitlines()
    out.unlink()
    assert (
        main(
            [
                "ambiguity",
                "score",
                str(src),
                "--out",
                str(out),
                "--method",
                "mfs",
                "--engine",
                "local",
                "--rows-per-shard",
                "2",
                "--no-gather",
                "--quiet",
            ]
        )
        == 0
    )
    assert not out.exists()
    assert read_output(tmp_path / "scores.jsonl.shards").column("record").to_pylist() == plain
    capsys.readouterr()
    assert main(["ambiguity", "score", str(src), "--out", str(out), "--method", "mfs", "--no-gather"]) == 2
    assert "--engine" in capsys.readouterr().err
