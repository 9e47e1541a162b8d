"""Manifests record the environment; run caches are keyed on config, version and code."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from alignlab.core import manifest as M
from alignlab.core.io import write_json


def test_the_manifest_records_the_environment_that_decides_the_numbers():
    m = M.build_manifest(config={"lr": 0.1}, seed=0)
    env = m["environment"]
    assert {
        "machine",
        "processor",
        "cpu_count",
        "torch",
        "torch_cpu_capability",
        "torch_interop_threads",
        "deterministic_algorithms",
        "numpy",
        "blas",
        "env",
        "cpu_vector_flags",
    } <= set(env)
    assert m["code_sha256"] == M.code_hash() and len(m["code_sha256"]) == 64
    assert m["cache_key"] == M.cache_key({"lr": 0.1})


def test_kernel_pins_are_recorded(monkeypatch):
    # A pin of the CPU kernels changes the numbers (docs/reproducibility.md): the manifest must say so.
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    M.environment.cache_clear()
    try:
        env = M.environment()["env"]
    finally:
        M.environment.cache_clear()
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_cache_key_changes_with_code_version_and_config(monkeypatch):
    base = M.cache_key({"lr": 0.1})
    assert M.cache_key({"lr": 0.2}) != base
    monkeypatch.setattr(M, "code_hash", lambda: "0" * 64)
    assert M.cache_key({"lr": 0.1}) != base
    monkeypatch.setattr(M.alignlab, "__version__", "9.9.9")
    assert M.cache_key({"lr": 0.1}) != base


def test_code_hash_covers_every_source_file():
    from pathlib import Path

    import alignlab

    root = Path(alignlab.__file__).parent
    assert len(list(root.rglob("*.py"))) > 50
    assert M.code_hash() == M.code_hash.__wrapped__()  # cached value equals a fresh computation


def test_a_finished_dcd_run_of_other_code_is_not_reused(tmp_path, monkeypatch):
    from alignlab.distill.dcd.train import _finished, load_run_config

    cfg = load_run_config({})
    (tmp_path / "per_query.json").write_text("{}")
    write_json(
        tmp_path / "results.json",
        {"manifest": {"cache_key": M.cache_key(asdict(cfg)), "config_sha256": M.config_hash(asdict(cfg))}},
    )
    assert _finished(tmp_path, cfg) is not None
    monkeypatch.setattr(M, "code_hash", lambda: "f" * 64)  # the code changed since
    import alignlab.distill.dcd.train as T

    monkeypatch.setattr(T, "cache_key", M.cache_key)
    assert _finished(tmp_path, cfg) is None


@pytest.mark.parametrize("key", ["wall_s", "finished_utc"])
def test_manifest_diff_ignores_times_but_shows_code_changes(key):
    a = {"manifest": {key: 1, "code_sha256": "a"}}
    b = {"manifest": {key: 2, "code_sha256": "b"}}
    assert M.diff_manifests(a, b) == [("manifest.code_sha256", "a", "b")]


def test_blas_libraries_are_listed_in_a_stable_order():
    """threadpoolctl lists libraries in load order, which differs between processes; the manifest sorts."""
    blas = M.environment()["blas"]
    if not blas:
        pytest.skip("threadpoolctl is not installed")
    keys = [
        tuple(
            str(r[k]) for k in ("internal_api", "version", "threading_layer", "architecture", "num_threads")
        )
        for r in blas
    ]
    assert keys == sorted(keys)
