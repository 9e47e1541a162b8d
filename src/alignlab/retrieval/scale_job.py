"""The encoding step of ``eval retrieval`` as a sharded job (``--engine local|ray``), for dual encoders.

Rows are the images (shards of ``images``) and then the captions (shards of ``captions``) of the
evaluation set, which travels with the job (image paths, or the array of a generated set). Each worker
builds the model once (after the same ``set_seed`` as the plain path), then encodes its shards in batches of
256 from the shard's start, as :func:`~alignlab.retrieval.evaluate.encode_pairs` does from row 0; with shard
sizes a multiple of 256 the batches, and so the embeddings, are the plain path's bit for bit
(pinned by tests/scale). The driver gathers the embeddings in order and computes the exact metrics from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from alignlab.scale.shards import Shard

ENCODE_BATCH = 256  # encode_pairs' batch size


@dataclass
class EncodeJob:
    model: str  # model spec
    pairs: Any  # the ImageTextPairs (image paths or an in-memory array travel with the job, once per worker)
    seed: int = 0
    device: str = "cpu"
    allow_download: bool = False
    name: str = "retrieval-encode"

    def identity(self) -> dict[str, Any]:
        import hashlib

        captions = hashlib.sha256("\n".join(self.pairs.captions).encode()).hexdigest()
        return {
            "model": self.model,
            "data": self.pairs.name,
            "images": self.pairs.n_images,
            "captions": self.pairs.n_captions,
            "captions_sha256": captions,
            "seed": self.seed,
        }

    def open(self) -> _Worker:
        from alignlab.core.seed import set_seed
        from alignlab.models.factory import load_model

        set_seed(self.seed)  # as the plain path: an untrained tiny model gets the same weights
        kwargs = {"allow_download": True} if self.allow_download else {}
        model = load_model(self.model, device=self.device, **kwargs)
        if hasattr(model, "eval"):
            model.eval()
        return _Worker(model, self.pairs)


class _Worker:
    def __init__(self, model: Any, pairs: Any):
        self.model, self.pairs = model, pairs

    def process(self, shard: Shard, rows: list[dict[str, Any]]):
        import pyarrow as pa
        import torch

        from alignlab.models.base import load_images_for

        ids = list(range(shard.start, shard.stop))
        out = []
        with torch.no_grad():
            for s in range(0, len(ids), ENCODE_BATCH):
                batch = ids[s : s + ENCODE_BATCH]
                if shard.source == "images":
                    emb = self.model.encode_images(load_images_for(self.model, self.pairs, batch))
                else:
                    emb = self.model.encode_texts([self.pairs.captions[c] for c in batch])
                out.append(emb.float().cpu().numpy())
        emb = np.ascontiguousarray(np.concatenate(out).astype(np.float32, copy=False))
        flat = pa.array(emb.reshape(-1), type=pa.float32())
        return pa.table(
            {
                "row": pa.array(ids, type=pa.int64()),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1]),
            }
        )


def encode_sharded(job: EncodeJob, shards_out: Any, opts: Any, rows_per_shard: int):
    """(image embeddings, caption embeddings, run report) of ``job.pairs``."""
    import torch

    from alignlab.scale.engine import read_output, run_job
    from alignlab.scale.shards import plan_range, renumber

    pairs = job.pairs
    shards = renumber(
        plan_range(pairs.n_images, rows_per_shard, source="images")
        + plan_range(pairs.n_captions, rows_per_shard, source="captions")
    )
    report = run_job(job, shards, shards_out, opts)
    col = read_output(shards_out, columns=["embedding"]).column("embedding").combine_chunks()
    emb = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1).astype(np.float32, copy=False)
    img = torch.from_numpy(emb[: pairs.n_images].copy())
    txt = torch.from_numpy(emb[pairs.n_images :].copy())
    return img, txt, report
