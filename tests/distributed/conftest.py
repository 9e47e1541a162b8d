"""One 2-process gloo session runs every DDP scenario (process start-up dominates on 2 shared cores)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ddp_run(tmp_path_factory) -> Path:
    """Folder with what :func:`ddp_scenarios.worker` measured on 2 CPU processes (gloo)."""
    import ddp_scenarios

    from alignlab.train.distributed import spawn

    out = tmp_path_factory.mktemp("ddp")
    t = time.time()
    spawn(ddp_scenarios.worker, 2, str(out))
    (out / "wall_s.txt").write_text(f"{time.time() - t:.1f}\n")
    return out
