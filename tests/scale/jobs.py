"""Small, area-free jobs that exercise the engine: text lengths, slow shards, a worker that crashes once.

They live in a plain module so that a subprocess driver (the kill-and-resume test) and Ray workers
(pickled by value, see ``ray_session`` in test_ray_jobs.py) run the same code.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LengthJob:
    """Upper-cases each row's text and counts its characters; ``sleep_s`` per shard; ``crash_dir``: the first
    attempt at each of ``crash_shards`` kills its worker process (a marker there says the shard was tried)."""

    sleep_s: float = 0.0
    crash_dir: str | None = None
    crash_shards: tuple[str, ...] = ()
    name: str = "test-length"

    def identity(self) -> dict:
        return {"kind": "length"}

    def open(self):
        self.opened_pid = os.getpid()
        return _LengthWorker(self)


class _LengthWorker:
    def __init__(self, job: LengthJob):
        self.job = job

    def process(self, shard, rows):
        from alignlab.scale.shards import text_of

        if self.job.crash_dir is not None and shard.id in self.job.crash_shards:
            marker = Path(self.job.crash_dir) / f"tried-{shard.id}"
            if not marker.exists():
                marker.touch()
                os._exit(1)  # a worker crash: no exception, the process is gone
        time.sleep(self.job.sleep_s)
        texts = [text_of(r, shard) for r in rows]
        return {
            "row": [r["_row"] for r in rows],
            "line": [r["_line"] for r in rows],
            "upper": [t.upper() for t in texts],
            "chars": [len(t) for t in texts],
            "pid": [os.getpid()] * len(rows),
        }


@dataclass
class NoModelJob:
    """A job whose model cannot be loaded on the worker (a user error, not a crash)."""

    name: str = "test-no-model"

    def identity(self) -> dict:
        return {}

    def open(self):
        from alignlab.core.errors import ModelError

        raise ModelError("model files are missing", where="/models/x", fix="copy the model to every node")
