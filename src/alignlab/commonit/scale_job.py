"""The embedding step of ``commonit group --metric embedding`` as a sharded job (``--engine local|ray``).

Workers read their shard of the JSONL input themselves (the texts never pass through the driver), load
the sentence encoder once each, embed every distinct text of the shard once, and write one L2-normalised
float32 row per record. The driver gathers the rows in input order and runs k-means on them (scikit-learn
``KMeans``, or ``MiniBatchKMeans`` with ``--kmeans minibatch`` for millions of rows) exactly as the
single-process path does. The encoder's vectors do not depend on batch composition, so the embeddings, and
with them the groups, are the single-process ones bit for bit (pinned by tests/scale).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.errors import ConfigError
from alignlab.scale.shards import Shard


@dataclass
class EmbedJob:
    cfg: Any  # GroupingConfig
    name: str = "commonit-embed"

    def identity(self) -> dict[str, Any]:
        c = asdict(self.cfg)
        return {k: c[k] for k in ("encoder", "text", "task_field", "encode_batch_size")}

    def open(self) -> _Worker:
        from alignlab.commonit.grouping import load_encoder

        model, desc = load_encoder(self.cfg.encoder, allow_download=self.cfg.allow_download)
        return _Worker(self.cfg, model, desc)


class _Worker:
    def __init__(self, cfg: Any, model: Any, desc: dict[str, Any]):
        self.cfg, self.model, self.desc = cfg, model, desc

    def process(self, shard: Shard, rows: list[dict[str, Any]]):
        import pyarrow as pa

        from alignlab.commonit.grouping import embedding_texts, normalize_record

        source = Path(shard.source).stem
        records = [
            normalize_record(
                {k: v for k, v in r.items() if k != "_row"},
                f"{shard.source}:{r['_line']}",
                source=source,
                task_field=self.cfg.task_field,
            )
            for r in rows
        ]
        texts = embedding_texts(records, self.cfg)
        uniq, inverse = np.unique(np.asarray(texts, dtype=str), return_inverse=True)
        emb = self.model.encode(
            uniq.tolist(),
            batch_size=self.cfg.encode_batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        emb = np.ascontiguousarray(np.asarray(emb, dtype=np.float32)[inverse])
        flat = pa.array(emb.reshape(-1), type=pa.float32())
        # The encoder's description (name, source) goes into the grouping manifest, as on the plain path.
        desc = json.dumps(self.desc)
        return pa.table(
            {
                "row": pa.array([r["_row"] for r in rows], type=pa.int64()),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1]),
                "encoder": pa.array([desc] * len(rows)).dictionary_encode(),
            }
        )


def embed_sharded(
    inputs: list[Path], shards_out: Path, cfg: Any, opts: Any, rows_per_shard: int
) -> tuple[tuple[np.ndarray, dict[str, Any]], Any]:
    """((embeddings [n, d] in input order, encoder description), run report)."""
    from alignlab.scale.engine import read_output, run_job
    from alignlab.scale.shards import plan_files, renumber

    if cfg.encoder.lower() == "tfidf":
        raise ConfigError(
            "--encoder tfidf is fitted on the whole corpus and cannot be sharded",
            fix="use a sentence encoder (minilm) with --engine, or drop --engine",
        )
    bad = [p for p in inputs if Path(p).suffix.lower() == ".json"]
    if bad:
        raise ConfigError(
            "--engine reads JSONL (one record per line), not a .json list",
            where=str(bad[0]),
            fix="convert the file to JSONL, or drop --engine",
        )
    shards, offset = [], 0
    for p in inputs:
        plan = plan_files(p, rows_per_shard, fmt="jsonl")
        shards += [replace(s, offset=offset + s.offset) for s in plan]
        offset += sum(s.rows for s in plan)
    report = run_job(EmbedJob(cfg), renumber(shards), shards_out, opts)
    table = read_output(shards_out, columns=["embedding", "encoder"])
    col = table.column("embedding").combine_chunks()
    emb = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1).astype(np.float32, copy=False)
    desc = json.loads(str(table.column("encoder")[0]))
    return (emb, desc), report
