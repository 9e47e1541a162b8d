"""Data-scale jobs: sharded input, resumable Parquet output, and Ray Data as an optional engine.

Area-independent: a job (defined in its own area) says what to load once per worker and how to process
one shard; :func:`run_job` plans nothing, it runs the given shards locally or on a Ray actor pool,
records done shards in an atomic manifest and skips them when restarted. Ray is imported only when
``engine="ray"`` is asked for (extra ``scale``). See docs/scale.md.
"""

from alignlab.scale.engine import EngineOptions, RunReport, load_manifest, read_output, run_job
from alignlab.scale.shards import Shard, plan_files, plan_range, read_shard

__all__ = [
    "EngineOptions",
    "RunReport",
    "Shard",
    "load_manifest",
    "plan_files",
    "plan_range",
    "read_output",
    "read_shard",
    "run_job",
]
