"""The four data-scale jobs on a local Ray (2 CPUs, started once for this module) against the single process.

Each job's Ray output is compared with the plain single-process path row for row. All four are
bitwise equal here: the sentence encoder's vectors and the tiny models' outputs do not depend on which
rows share a batch, and the DCD miner makes training's own teacher call per batch (tolerance: none).
A worker that crashes is restarted by Ray, its shard retried and the retry counted.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alignlab.scale import EngineOptions, load_manifest, plan_files, read_output, run_job

from . import jobs
from .jobs import LengthJob

ray = pytest.importorskip("ray")
# Ray Data's own context warns about its deprecated settings when it is first used: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")

RAY = EngineOptions(engine="ray", workers=2, quiet=True)
RAY1 = EngineOptions(engine="ray", workers=1, quiet=True)
LOCAL = EngineOptions(engine="local", quiet=True)


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray.data

    # Workers unpickle the test jobs by value: tests/ is not importable inside a Ray worker.
    ray.cloudpickle.register_pickle_by_value(jobs)
    # address="local": a Ray of this module's own, even if a `ray start` cluster runs on the machine
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=200 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def test_a_crashed_worker_is_restarted_and_its_shard_retried_and_counted(tmp_path):
    src = tmp_path / "caps.txt"
    src.write_text("".join(f"caption {i}\n" for i in range(8)))
    shards = plan_files(src, rows_per_shard=2)
    job = LengthJob(crash_dir=str(tmp_path), crash_shards=("00001",))
    report = run_job(job, shards, tmp_path / "out", RAY)
    assert (report.ran, report.retries, report.workers) == (4, 1, 2)
    manifest = load_manifest(tmp_path / "out")
    assert manifest["retries"] == 1 and manifest["done"]["00001"]["attempts"] == 2
    assert manifest["done"]["00000"]["attempts"] == 1
    ray_out = read_output(tmp_path / "out").to_pydict()
    run_job(LengthJob(), shards, tmp_path / "local", LOCAL)
    local_out = read_output(tmp_path / "local").to_pydict()
    assert ray_out["upper"] == local_out["upper"] == [f"CAPTION {i}" for i in range(8)]
    assert len(set(ray_out["pid"])) >= 2  # more than one worker process did the work


def test_a_model_that_does_not_load_on_a_worker_is_the_users_one_line_error(tmp_path):
    from alignlab.core.errors import ModelError

    src = tmp_path / "caps.txt"
    src.write_text("a\nb\nc\n")
    with pytest.raises(ModelError, match="model files are missing") as e:
        run_job(jobs.NoModelJob(), plan_files(src, rows_per_shard=2), tmp_path / "out", RAY1)
    assert e.value.where == "/models/x" and e.value.fix.startswith("copy the model to every node")
    assert load_manifest(tmp_path / "out")["done"] == {}


def _ambiguity_plain_and_ray(tmp_path, method: str, workers: int) -> tuple[str, str]:
    from alignlab.ambiguity.wordnet import wordnet_available
    from alignlab.cli import main

    if not wordnet_available():
        pytest.skip("WordNet 3.0 is not installed")
    caps = [
        "A man swings a bat at the ball.",
        "Bats fly out of the cave at night.",
        "A woman sits on the bank of the river.",
        "People wait in line at the bank.",
        "A crane lifts steel beams.",
        "A crane stands in the shallow water.",
        "Two boys play in the park.",
        "A dog runs on the grass.",
    ] * 2
    src = tmp_path / "caps.en"
    src.write_text("".join(c + "\n" for c in caps))
    common = ["--method", method, "--quiet"]
    assert main(["ambiguity", "score", str(src), "--out", str(tmp_path / "plain.jsonl"), *common]) == 0
    assert (
        main(
            [
                "ambiguity",
                "score",
                str(src),
                "--out",
                str(tmp_path / "ray.jsonl"),
                "--engine",
                "ray",
                "--workers",
                str(workers),
                "--rows-per-shard",
                "4",
                *common,
            ]
        )
        == 0
    )
    return (tmp_path / "plain.jsonl").read_text(), (tmp_path / "ray.jsonl").read_text()


def test_ambiguity_scores_on_ray_equal_the_single_process_records(tmp_path, capsys):
    plain, on_ray = _ambiguity_plain_and_ray(tmp_path, "mfs", workers=1)  # WordNet only: fast
    out = capsys.readouterr().out
    assert "4 shard(s) run" in out and "retries: 0" in out
    assert on_ray == plain  # byte for byte: same records, same order
    assert any(json.loads(line)["ambiguous"] for line in plain.splitlines())


@pytest.mark.slow
def test_gloss_ambiguity_scores_on_two_ray_workers_match_the_single_process_within_the_tolerance(tmp_path):
    from alignlab.ambiguity.scale_job import TOLERANCE, compare_records

    plain, on_ray = _ambiguity_plain_and_ray(tmp_path, "gloss", workers=2)  # WordNet + MiniLM per worker
    worst, other = compare_records(plain.splitlines(), on_ray.splitlines())
    assert other == 0 and worst <= TOLERANCE
    assert any(json.loads(line)["ambiguous"] for line in plain.splitlines())


def test_commonit_embeddings_and_groups_on_ray_equal_the_single_process(tmp_path):
    from alignlab.commonit.grouping import GroupingConfig, embed_texts, group_records, load_records
    from alignlab.commonit.scale_job import embed_sharded
    from alignlab.commonit.tasks import generate
    from alignlab.core.io import write_jsonl

    recs = generate(48, seed=0)
    write_jsonl(tmp_path / "a.jsonl", recs[:30])
    write_jsonl(tmp_path / "b.jsonl", recs[30:])
    inputs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    cfg = GroupingConfig(metric="embedding", k=4, seed=0)
    records = load_records(inputs)
    (emb, desc), report = embed_sharded(inputs, tmp_path / "shards", cfg, RAY1, rows_per_shard=12)
    assert report.ran == 5 and desc["encoder"] == "all-MiniLM-L6-v2"  # shards of 12 + 12 + 6, 12 + 6
    plain_emb, _ = embed_texts([r.instruction for r in records], "minilm")
    assert emb.dtype == np.float32 and np.array_equal(emb, plain_emb)
    plain = group_records(records, cfg)
    sharded = group_records(records, cfg, (emb, desc))
    assert sharded.group_ids == plain.group_ids
    assert sharded.manifest["kmeans_inertia"] == plain.manifest["kmeans_inertia"]
    mini = group_records(
        records, GroupingConfig(metric="embedding", k=4, seed=0, kmeans="minibatch"), (emb, desc)
    )
    assert len(set(mini.group_ids)) == 4  # MiniBatchKMeans on the gathered embeddings


def test_retrieval_encoding_on_ray_equals_encode_pairs(tmp_path):
    from alignlab.core.seed import set_seed
    from alignlab.data.pairs import from_shapes
    from alignlab.data.shapes import ShapesConfig, ShapesWorld
    from alignlab.models.factory import load_model
    from alignlab.retrieval.evaluate import encode_pairs
    from alignlab.retrieval.metrics import evaluate_embeddings
    from alignlab.retrieval.scale_job import EncodeJob, encode_sharded

    pairs = from_shapes(ShapesWorld(ShapesConfig(image_size=64)).generate(40, 0, "test"), name="shapes-test")
    set_seed(3)
    model = load_model("tiny-dual")
    img, txt = encode_pairs(model, pairs)
    r_img, r_txt, report = encode_sharded(
        EncodeJob("tiny-dual", pairs, seed=3), tmp_path / "shards", RAY1, rows_per_shard=16
    )
    assert report.ran == -(-pairs.n_images // 16) + -(-pairs.n_captions // 16)
    assert torch.equal(r_img, img) and torch.equal(r_txt, txt)
    assert (
        evaluate_embeddings(r_img, r_txt, pairs.relevance).metrics
        == evaluate_embeddings(img, txt, pairs.relevance).metrics
    )


def test_dcd_mined_scores_on_ray_equal_trainings_own_teacher_scores(tmp_path):
    from dataclasses import replace

    from alignlab.core.seed import set_seed
    from alignlab.data.text import WordTokenizer
    from alignlab.distill.dcd.data import GroupBatches, groups_of
    from alignlab.distill.dcd.mine import load_mined, mine
    from alignlab.distill.dcd.miner import TeacherScores
    from alignlab.distill.dcd.students import load_teacher
    from alignlab.distill.dcd.train import DCDDataConfig, DCDRunConfig, load_dcd_data, pool_candidates
    from alignlab.models.factory import build_model, save_model
    from alignlab.train.loop import TrainConfig

    data_cfg = DCDDataConfig(train=48, val=12, test=12)
    data = load_dcd_data(data_cfg)
    set_seed(0)
    teacher = build_model(
        "tiny-cross",
        {"width": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2, "fusion_layers": 1},
        WordTokenizer.build(data["train"].captions),
    )
    save_model(teacher, tmp_path / "teacher")
    cfg = DCDRunConfig(
        teacher=f"ckpt:{tmp_path / 'teacher'}",
        data=data_cfg,
        pool_size=6,
        keep=2,
        train=TrainConfig(epochs=2, batch_size=12),
    )
    report = mine(cfg, tmp_path / "mined", RAY, batches_per_shard=2)
    assert report.ran == report.shards >= 2
    teacher = load_teacher(cfg.teacher)
    ts = TeacherScores(teacher, data["train"])
    memo = load_mined(tmp_path / "mined", cfg, ts, 12)
    batches = GroupBatches(groups_of(data["train"]), 12, cfg.seed)
    assert len(memo) == sum(len(batches.batches(e)) for e in range(2))
    for (*_, epoch, index), scores in memo.items():
        idx, pos, pool = pool_candidates(cfg, batches, data["train"], epoch, index)
        cand = np.concatenate([pos[:, None], pool], axis=1)
        own = ts.pair_scores(np.repeat(idx, cand.shape[1]), cand.reshape(-1)).view(cand.shape)
        assert torch.equal(scores, own)  # bit for bit what DCDTask.batch computes
    with pytest.raises(Exception, match="other seed"):
        load_mined(tmp_path / "mined", replace(cfg, seed=1), ts, 12)
