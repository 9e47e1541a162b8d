"""Provenance of every result.

Every ``results.json`` alignlab writes carries identity keys (task, model, data, seed), a ``metrics``
dict, and a ``manifest``: package versions, the git commit of the alignlab checkout (if it is one),
the config and its SHA-256, device, threads, wall time and command line. Two manifests can be
compared with :func:`diff_manifests` (``alignlab repro diff``).

>>> m = build_manifest(config={"lr": 0.1}, seed=0)
>>> m["config_sha256"] == config_hash({"lr": 0.1})
True
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import alignlab
from alignlab.core.io import to_jsonable, write_json

# Optional packages whose version matters for a result when they were used (already imported).
_OPTIONAL = (
    "transformers",
    "sentence_transformers",
    "sklearn",
    "open_clip",
    "sacrebleu",
    "nltk",
    "accelerate",
)


def config_hash(config: Any) -> str:
    """SHA-256 of the canonical JSON of ``config`` (keys sorted), so equal configs hash equally."""
    text = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def code_hash() -> str:
    """SHA-256 over the alignlab package's Python sources (relative path + bytes, in sorted order).

    Part of every result-cache key: a cached result made by other code is never reused silently, even
    when the config is the same (the git commit alone misses uncommitted edits and installed wheels).
    """
    root = Path(alignlab.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def cache_key(config: Any) -> str:
    """The key a cached run result must match: the config, the package version and the code that ran."""
    return config_hash({"config": to_jsonable(config), "alignlab": alignlab.__version__, "code": code_hash()})


@lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """What decides the numbers besides the config: library builds, BLAS, CPU features, thread defaults."""
    import numpy
    import torch

    env: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_vector_flags": _cpu_vector_flags(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cpu_capability": _safe(lambda: torch.backends.cpu.get_cpu_capability()),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "numpy": numpy.__version__,
        "blas": _blas(),
        "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
    }
    return env


# Environment variables that change which kernels run, and so the last bits of every number
# (docs/reproducibility.md measures by how much): thread counts, and the CPU-kernel pins of ATen, MKL, oneDNN.
KERNEL_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "CUBLAS_WORKSPACE_CONFIG",
    "PYTHONHASHSEED",
)
_VECTOR_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "asimd",
    "sve",
)


def _cpu_vector_flags() -> list[str] | None:
    """The CPU's vector-instruction flags that kernel dispatch looks at (Linux; None elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in _VECTOR_FLAGS if f in have]
    except OSError:
        pass
    return None


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except Exception:  # a build without the query: record that it is unknown
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _blas() -> list[dict[str, Any]] | None:
    """The BLAS libraries numpy and torch call, with their kernels and thread counts (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keep = ("internal_api", "version", "threading_layer", "architecture", "num_threads")
    # sorted: threadpoolctl lists libraries in the order they were loaded, which differs between runs
    rows = [{k: info.get(k) for k in keep} for info in threadpool_info()]
    return sorted(rows, key=lambda r: tuple(str(r[k]) for k in keep))


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the alignlab source checkout (with ``-dirty`` if it has changes), else None."""
    here = Path(alignlab.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def package_versions() -> dict[str, str]:
    import numpy
    import torch

    versions = {
        "alignlab": alignlab.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
    for name in _OPTIONAL:
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "__version__"):
            versions[name] = str(mod.__version__)
    return versions


def build_manifest(
    config: Any = None,
    seed: int | None = None,
    started: float | None = None,
    device: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A provenance record; ``started`` is a ``time.time()`` value from the start of the run."""
    import torch

    m: dict[str, Any] = dict(package_versions())
    m["git"] = git_commit()
    m["config"] = to_jsonable(config) if config is not None else None
    m["config_sha256"] = config_hash(config) if config is not None else None
    m["code_sha256"] = code_hash()
    m["cache_key"] = cache_key(config) if config is not None else None
    m["seed"] = seed
    m["device"] = device or ("cuda" if torch.cuda.is_available() else "cpu")
    m["threads"] = torch.get_num_threads()
    m["platform"] = platform.platform()
    m["environment"] = environment()
    m["argv"] = list(sys.argv)
    m["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    m["wall_s"] = round(time.time() - started, 3) if started is not None else None
    m.update(to_jsonable(extra))
    return m


def make_result(
    *,
    task: str,
    model: str,
    data: str,
    seed: int | None,
    metrics: Mapping[str, Any],
    definitions: Mapping[str, str] | None = None,
    config: Any = None,
    started: float | None = None,
    device: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A result record in the project's format (identity keys, metrics, definitions, manifest)."""
    result: dict[str, Any] = {
        "task": task,
        "model": model,
        "data": data,
        "seed": seed,
        "metrics": to_jsonable(dict(metrics)),
    }
    if definitions:
        result["definitions"] = dict(definitions)
    result.update(to_jsonable(extra))
    result["manifest"] = build_manifest(config=config, seed=seed, started=started, device=device)
    return result


def write_result(path: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Build a result with :func:`make_result` and write it atomically; returns it."""
    result = make_result(**kwargs)
    write_json(path, result)
    return result


def diff_manifests(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Differences between two manifests (or whole results) as (dotted key, value in a, value in b).

    Keys that always differ between runs (wall time, finish time) are left out.
    """
    skip = {"wall_s", "finished_utc"}
    out: list[tuple[str, Any, Any]] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            for k in sorted(set(x) | set(y), key=str):
                if k in skip:
                    continue
                walk(x.get(k, _MISSING), y.get(k, _MISSING), f"{prefix}.{k}" if prefix else str(k))
        elif x != y:
            out.append((prefix, None if x is _MISSING else x, None if y is _MISSING else y))

    walk(a, b, "")
    return out


_MISSING = object()
