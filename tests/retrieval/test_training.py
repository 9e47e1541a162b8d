"""Training and evaluating retrieval runs end to end: results, resume, model selection."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from alignlab.core.io import read_json
from alignlab.retrieval.training import DataConfig, RetrievalRunConfig, run_retrieval
from alignlab.train.loop import StopTraining, TrainConfig

TINY_MODEL = {"width": 32, "embed_dim": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2}


def tiny_cfg(**kw) -> RetrievalRunConfig:
    cfg = RetrievalRunConfig(
        model_config=dict(TINY_MODEL),
        data=DataConfig(train=96, val=32, test=40),
        train=TrainConfig(
            epochs=2, batch_size=32, lr=3e-3, select_metric="rsum", log_every=1, checkpoint_every=2
        ),
    )
    return replace(cfg, **kw)


def test_run_writes_results_with_manifest_and_per_query_ranks(tmp_path):
    res = run_retrieval(tiny_cfg(), tmp_path / "run")
    saved = read_json(tmp_path / "run" / "results.json")
    assert saved["metrics"] == res["metrics"]
    assert {
        "task",
        "model",
        "data",
        "seed",
        "metrics",
        "definitions",
        "manifest",
        "dev_curve",
        "best",
    } <= set(saved)
    assert saved["manifest"]["config_sha256"] and saved["manifest"]["torch"]
    pq = read_json(tmp_path / "run" / "per_query.json")
    assert len(pq["i2t_rank"]) == 40 and len(pq["t2i_rank"]) == 200
    # the best checkpoint is the argmax of the stored dev curve
    rsums = [e["rsum"] for e in res["dev_curve"]]
    assert res["best"]["epoch"] == rsums.index(max(rsums)) + 1
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_interrupted_run_resumes_to_the_same_metrics(tmp_path):
    full = run_retrieval(tiny_cfg(), tmp_path / "full")

    def crash(state):
        if state["step"] == 3:
            raise StopTraining

    with pytest.raises(StopTraining):
        run_retrieval(tiny_cfg(), tmp_path / "crash", callbacks=[crash])
    assert not (tmp_path / "crash" / "results.json").exists()
    resumed = run_retrieval(tiny_cfg(), tmp_path / "crash")
    assert resumed["metrics"] == full["metrics"]
    assert resumed["dev_curve"] == full["dev_curve"]


def test_same_seed_same_numbers_and_different_seed_differs(tmp_path):
    a = run_retrieval(tiny_cfg(seed=1), tmp_path / "a")
    b = run_retrieval(tiny_cfg(seed=1), tmp_path / "b", resume=False)
    c = run_retrieval(tiny_cfg(seed=2), tmp_path / "c")
    assert a["metrics"] == b["metrics"]
    assert json.dumps(a["dev_curve"]) != json.dumps(c["dev_curve"])


def test_cross_encoder_trains_and_is_evaluated_on_all_pairs(tmp_path):
    cfg = tiny_cfg(
        model="tiny-cross",
        model_config={**{k: v for k, v in TINY_MODEL.items() if k != "embed_dim"}, "fusion_layers": 1},
        cross_dev_images=16,
        test_images=16,
    )
    cfg = replace(cfg, train=replace(cfg.train, epochs=1))
    res = run_retrieval(cfg, tmp_path / "cross")
    assert res["model"] == "tiny-cross" and 0 <= res["metrics"]["i2t_R@1"] <= 100
    assert len(read_json(tmp_path / "cross" / "per_query.json")["t2i_rank"]) == 80


def test_pretrained_image_tower_is_loaded_and_a_misfit_is_a_clear_error(tmp_path):
    from alignlab.core.errors import ConfigError
    from alignlab.models.tiny import TinyImageConfig
    from alignlab.retrieval.pretrain import PretrainConfig, pretrain_image_tower

    tower = TinyImageConfig(channels=(8, 16, 32), width=32, heads=2)
    stats = pretrain_image_tower(
        tower, PretrainConfig(images=64, epochs=1, batch_size=32, heldout=32), tmp_path / "t.safetensors"
    )
    assert 0.0 <= stats["heldout_micro_f1"] <= 1.0
    cfg = tiny_cfg(init_image_tower=str(tmp_path / "t.safetensors"))
    cfg = replace(cfg, train=replace(cfg.train, epochs=1))
    run_retrieval(cfg, tmp_path / "pre")
    bad = tiny_cfg(init_image_tower=str(tmp_path / "t.safetensors"), model_config={**TINY_MODEL, "width": 16})
    with pytest.raises(ConfigError, match="does not fit"):
        run_retrieval(bad, tmp_path / "bad")
