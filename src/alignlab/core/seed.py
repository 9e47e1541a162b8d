"""Seeding and determinism.

``set_seed`` seeds Python's, NumPy's and torch's global generators. Library code should not rely on
global generators, though: samplers and generators take their own ``numpy.random.Generator`` or
``torch.Generator`` derived with :func:`derive_seed`, so that one component's draws never shift
another's.

>>> set_seed(3)
>>> derive_seed(3, "shapes", "train") == derive_seed(3, "shapes", "train")
True
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed ``random``, NumPy and torch (CPU and every CUDA device).

    With ``deterministic=True`` torch is also asked to use deterministic kernels only (an error is
    raised by torch for an operation that has none) and cuDNN autotuning is turned off; on CPU the
    same seed then gives the same numbers run after run.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        # cuBLAS needs this workspace setting for reproducible matmuls on CUDA >= 10.2.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any printable parts (same parts -> same seed, on every platform).

    Unlike ``hash()``, this does not change between Python processes.
    """
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def get_rng_state() -> dict[str, Any]:
    """The state of every global generator, for checkpoints that must resume exactly."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(_as_python_state(state["python"]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(state: Any) -> tuple:
    # After a round trip through torch.save/load the inner tuple may come back as a list.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"1,3,7"`` -> [1, 3, 7]; ``"0-2,9"`` -> [0, 1, 2, 9]."""
    from alignlab.core.errors import ConfigError

    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
                seeds.extend(range(lo_i, hi_i + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(
            f"cannot read seeds {text!r}", fix="write a range like 0-4 or a list like 0,1,5"
        ) from None
    if not seeds:
        raise ConfigError(f"no seeds in {text!r}", fix="write a range like 0-4 or a list like 0,1,5")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seed list {text!r} repeats a seed", fix="give each seed once")
    return seeds
