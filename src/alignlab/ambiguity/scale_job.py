"""``ambiguity score`` as a sharded job (``--engine local|ray``): WSD + ambiguity of every caption.

Each worker loads WordNet and the sentence encoder once (:meth:`AmbiguityScoreJob.open`) and scores its
shards with the same :func:`~alignlab.ambiguity.select.score_captions` as the single-process path. A
shard's rows keep their position in the whole input, so the gathered records are the single-process
records, row for row, with one stated tolerance (:data:`TOLERANCE`, pinned by tests/scale): a caption's
context vector can differ in its last float bits with the batch it was encoded in (shards change which
captions share a batch, and a caption repeated in an earlier chunk is not encoded again), so a rounded
probability, entropy, margin or score may differ by one unit in its 6th decimal. Every discrete field
(words, senses and their order, plausible counts, ambiguous flags) is equal; ``mfs`` and ``lesk`` use no
encoder and are byte-identical.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from alignlab.scale.shards import Shard, text_of

TOLERANCE = 2e-6  # largest difference of a float field between sharded and single-process records


def compare_records(a_lines: list[str], b_lines: list[str]) -> tuple[float, int]:
    """(largest absolute difference of the float fields, number of other fields that differ) between two
    scores JSONL files given as lines; the records must be in the same order."""
    worst, other = 0.0, abs(len(a_lines) - len(b_lines))

    def walk(x: Any, y: Any) -> None:
        nonlocal worst, other
        if isinstance(x, float) and isinstance(y, (int, float)) and not isinstance(y, bool):
            worst = max(worst, abs(x - y))
        elif isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys():
            for k in x:
                walk(x[k], y[k])
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for p, q in zip(x, y):
                walk(p, q)
        elif x != y:
            other += 1

    for a, b in zip(a_lines, b_lines):
        walk(json.loads(a), json.loads(b))
    return worst, other


@dataclass
class AmbiguityScoreJob:
    wsd: Any  # WSDConfig
    select: Any  # SelectConfig
    name: str = "ambiguity-score"

    def identity(self) -> dict[str, Any]:
        return {"wsd": asdict(self.wsd), "select": asdict(self.select)}

    def open(self) -> _Worker:
        from alignlab.ambiguity.wsd import Disambiguator

        return _Worker(self, Disambiguator(self.wsd))


class _Worker:
    def __init__(self, job: AmbiguityScoreJob, wsd: Any):
        self.job = job
        self.wsd = wsd

    def process(self, shard: Shard, rows: list[dict[str, Any]]) -> dict[str, list]:
        from alignlab.ambiguity.select import CaptionScore, score_captions

        texts = [text_of(r, shard) for r in rows]
        scores = score_captions(texts, self.wsd, self.job.select, desc=f"shard {shard.id}")
        records = [
            CaptionScore(r["_row"], s.text, s.score, s.ambiguous, s.words).to_record()
            for r, s in zip(rows, scores)
        ]
        return {
            "line": [rec["line"] for rec in records],
            "score": [rec["score"] for rec in records],
            "ambiguous": [rec["ambiguous"] for rec in records],
            "record": [json.dumps(rec, ensure_ascii=False) for rec in records],
        }


def score_sharded(
    input_path: Path,
    shards_out: Path,
    wsd_cfg: Any,
    sel_cfg: Any,
    opts: Any,
    rows_per_shard: int,
    limit: int | None = None,
    gather: bool = True,
):
    """Run the job; returns (the scores, their JSONL lines, the run report), rows in input order
    (``gather=False``: only ``(report,)``; the records stay in the Parquet shards)."""
    from alignlab.ambiguity.select import CaptionScore
    from alignlab.scale.engine import read_output, run_job
    from alignlab.scale.shards import plan_files

    shards = plan_files(input_path, rows_per_shard)
    if limit is not None:
        shards = [
            replace(s, stop=min(s.stop, s.start + limit - s.offset)) for s in shards if s.offset < limit
        ]
    report = run_job(AmbiguityScoreJob(wsd_cfg, sel_cfg), shards, shards_out, opts)
    if not gather:
        return (report,)
    lines = read_output(shards_out, columns=["record"]).column("record").to_pylist()
    return [CaptionScore.from_record(json.loads(r)) for r in lines], lines, report
