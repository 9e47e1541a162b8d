"""Provenance manifests and result records (alignlab.core.manifest)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass

import numpy as np
import torch

from alignlab.core.io import read_json
from alignlab.core.manifest import build_manifest, config_hash, diff_manifests, make_result, write_result


@dataclass
class Cfg:
    lr: float = 0.1
    layers: int = 2


def test_manifest_records_versions_git_config_device_threads_seed_and_wall_time():
    started = time.time() - 1.5
    m = build_manifest(config={"lr": 0.1}, seed=4, started=started)
    for key in (
        "alignlab",
        "python",
        "torch",
        "numpy",
        "git",
        "config",
        "config_sha256",
        "seed",
        "device",
        "threads",
        "platform",
        "argv",
        "finished_utc",
        "wall_s",
    ):
        assert key in m, key
    assert m["torch"] == torch.__version__ and m["numpy"] == np.__version__
    assert m["config"] == {"lr": 0.1} and m["config_sha256"] == config_hash({"lr": 0.1})
    assert m["seed"] == 4 and m["device"] == "cpu" and m["threads"] == torch.get_num_threads()
    assert 1.5 <= m["wall_s"] < 60
    assert m["git"] is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", m["git"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["finished_utc"])
    json.dumps(m)  # plain JSON values only


def test_manifest_without_config_or_start_has_nulls():
    m = build_manifest()
    assert m["config"] is None and m["config_sha256"] is None and m["wall_s"] is None


def test_config_hash_is_sha256_of_canonical_json_independent_of_key_order():
    a = {"b": [1, 2], "a": {"y": 1.5, "x": "你"}}
    b = {"a": {"x": "你", "y": 1.5}, "b": [1, 2]}
    canonical = '{"a":{"x":"你","y":1.5},"b":[1,2]}'
    assert config_hash(a) == config_hash(b) == hashlib.sha256(canonical.encode()).hexdigest()
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_config_hash_treats_dataclasses_and_numpy_values_like_plain_ones():
    assert config_hash(Cfg()) == config_hash({"layers": 2, "lr": 0.1})
    assert config_hash({"n": np.int64(3), "w": np.float64(0.5)}) == config_hash({"n": 3, "w": 0.5})
    assert config_hash(Cfg(lr=0.2)) != config_hash(Cfg())


def test_write_result_writes_identity_metrics_definitions_and_manifest(tmp_path):
    path = tmp_path / "run" / "results.json"
    res = write_result(
        path,
        task="retrieval",
        model="tiny-dual",
        data="shapes-1k",
        seed=3,
        metrics={"i2t_R@1": np.float32(41.25), "rsum": 402.5},
        definitions={"R@K": "hit@K in %"},
        config=Cfg(),
        started=time.time(),
        epochs=7,
    )
    on_disk = read_json(path)
    assert on_disk == res
    assert (on_disk["task"], on_disk["model"], on_disk["data"], on_disk["seed"]) == (
        "retrieval",
        "tiny-dual",
        "shapes-1k",
        3,
    )
    assert on_disk["metrics"] == {"i2t_R@1": 41.25, "rsum": 402.5}
    assert on_disk["definitions"] == {"R@K": "hit@K in %"} and on_disk["epochs"] == 7
    assert on_disk["manifest"]["config_sha256"] == config_hash(Cfg()) and on_disk["manifest"]["seed"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_diff_manifests_lists_changed_added_and_removed_keys_but_not_times():
    a = make_result(task="t", model="m", data="d", seed=0, metrics={"acc": 0.5}, config={"lr": 0.1, "w": 8})
    time.sleep(0.01)
    b = make_result(
        task="t",
        model="m",
        data="d",
        seed=0,
        metrics={"acc": 0.5},
        config={"lr": 0.1, "w": 8},
        started=time.time() - 3,
    )
    assert diff_manifests(a, b) == []  # only wall time and finish time differ, and they are skipped
    c = make_result(task="t", model="m", data="d", seed=1, metrics={"acc": 0.6}, config={"lr": 0.2})
    diff = {k: (x, y) for k, x, y in diff_manifests(a["manifest"], c["manifest"])}
    assert diff["seed"] == (0, 1)
    assert diff["config.lr"] == (0.1, 0.2)
    assert diff["config.w"] == (8, None)
    assert diff["config_sha256"] == (config_hash({"lr": 0.1, "w": 8}), config_hash({"lr": 0.2}))
    assert set(diff) == {
        "seed",
        "config.lr",
        "config.w",
        "config_sha256",
        "cache_key",
    }  # the key follows the config
    whole = {k for k, _, _ in diff_manifests(a, c)}
    assert {"metrics.acc", "seed", "manifest.seed", "manifest.config.lr"} <= whole
