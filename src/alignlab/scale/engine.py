"""Run a sharded job in this process or on Ray Data, with resumable Parquet output.

A **job** is an object with

* ``name`` — a short name recorded in the manifest;
* ``identity()`` — a JSON-able dict of everything that decides the output (model, settings); a folder
  written under another identity is not resumed (:class:`ResumeError`);
* ``open()`` — loads the models and returns a *worker*, whose ``process(shard, rows)`` returns the
  shard's output as a ``pyarrow.Table`` or a dict of equal-length columns.

``open()`` runs **once per worker**: in this process for ``engine="local"``, once per actor of a Ray Data
actor pool (``map_batches`` with a callable class) for ``engine="ray"``; never per batch or shard.

**Output** (``out_dir``): ``part-<shard>.parquet`` per shard, written by the worker atomically (temporary
file + rename), and ``manifest.json``, rewritten atomically by the driver after every finished shard:
the job, its identity and hash, the shard plan, the done shards (rows, seconds, attempts) and the retry
count. A restarted run reads the manifest and skips the shards that are done.

**Failures.** A malformed row makes its shard fail with a :class:`DataError` naming file, line and
shard; the other shards still run and their output is kept, and the run then raises that error. A worker
that crashes (killed, out of memory) is restarted by Ray and its shard retried; each attempt leaves a
marker under ``out_dir/_attempts/``, so retries are counted across processes, reported, and bounded by
``max_attempts`` per shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.core import errors as errors_module
from alignlab.core.errors import AlignlabError, ConfigError, DataError, DependencyError, ResumeError
from alignlab.core.io import atomic_path, read_json, write_json
from alignlab.core.progress import info
from alignlab.scale.shards import Shard, read_shard

ENGINES = ("local", "ray")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
MANIFEST_EVERY_S = 1.0  # the driver rewrites the manifest at most this often while shards finish


@dataclass
class EngineOptions:
    """Where and how a job runs (see the module docstring)."""

    engine: str = "local"  # local (this process) | ray (Ray Data actor pool)
    ray_address: str | None = (
        None  # an existing cluster (host:port, ray://host:port or auto); None: start one
    )
    ray_cpus: int | None = None  # CPUs of a Ray started here (default: all of this machine's)
    workers: int | None = None  # actors in the pool (default: the cluster's CPUs, at most one per shard)
    max_attempts: int = 3  # attempts per shard before the run gives up on it
    connect_timeout_s: float = 5.0  # how long to wait for a cluster address to answer
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}", fix=f"choose one of {', '.join(ENGINES)}")
        if self.engine == "local" and (self.ray_address or self.ray_cpus):
            raise ConfigError("--ray-address/--ray-cpus need --engine ray", fix="add --engine ray")
        if self.ray_cpus is not None and self.ray_cpus < 1:
            raise ConfigError(f"--ray-cpus must be >= 1, got {self.ray_cpus}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")


@dataclass
class RunReport:
    """What a run did: shards skipped (done before), run, failed; rows, time, workers and retries."""

    out_dir: Path
    shards: int
    skipped: int = 0
    ran: int = 0
    rows: int = 0
    seconds: float = 0.0
    workers: int = 1
    retries: int = 0
    startup_s: float = 0.0  # Ray start or connect (0 for the local engine)
    failed: list[dict[str, Any]] = field(default_factory=list)
    engine: str = "local"

    def summary(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else float("nan")
        text = (
            f"{self.engine}: {self.ran} shard(s) run, {self.skipped} already done, {self.rows} rows in "
            f"{self.seconds:.1f} s ({rate:.1f} rows/s) on {self.workers} worker(s); retries: {self.retries}"
        )
        if self.startup_s:
            text += f"; Ray start-up {self.startup_s:.1f} s"
        if self.failed:
            text += f"; {len(self.failed)} shard(s) failed"
        return text


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _plan_record(shards: Sequence[Shard]) -> list[dict[str, Any]]:
    return [s.to_dict() for s in shards]


# --- the manifest ----------------------------------------------------------------------------------------


def load_manifest(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(out_dir) / MANIFEST
    return read_json(path) if path.is_file() else None


def _start_manifest(job: Any, shards: Sequence[Shard], out_dir: Path) -> dict[str, Any]:
    identity = job.identity()
    plan = _plan_record(shards)
    old = load_manifest(out_dir)
    if old is not None:
        if old.get("identity_sha256") != identity_hash(identity) or old.get("job") != job.name:
            raise ResumeError(
                f"the output folder holds a {old.get('job')!r} run with other settings",
                where=str(out_dir / MANIFEST),
                fix="use the same settings to resume, or another output folder (or delete this one)",
            )
        if old.get("plan") != plan:
            raise ResumeError(
                "the output folder was written for another input or shard size",
                where=str(out_dir / MANIFEST),
                fix="use the same input and rows per shard to resume, or another output folder",
            )
        # A shard counts as done only if its file is still there.
        old["done"] = {k: v for k, v in old.get("done", {}).items() if (out_dir / v["file"]).is_file()}
        _adopt_written_parts(old, shards, out_dir)
        return old
    return {
        "version": MANIFEST_VERSION,
        "job": job.name,
        "identity": identity,
        "identity_sha256": identity_hash(identity),
        "plan": plan,
        "done": {},
        "failed": {},
        "retries": 0,
        "complete": False,
    }


def _adopt_written_parts(manifest: dict[str, Any], shards: Sequence[Shard], out_dir: Path) -> None:
    """Count as done the shards whose Parquet file was written after the manifest's last rewrite (the
    driver was killed in between): a part file is complete by construction (atomic rename), and the
    identity and plan were checked, so it holds this job's output for this shard."""
    import pyarrow.parquet as pq

    for s in shards:
        path = part_path(out_dir, s.id)
        if s.id not in manifest["done"] and path.is_file():
            try:
                rows = pq.ParquetFile(path).metadata.num_rows
            except Exception:  # noqa: BLE001 - unreadable: the shard simply runs again
                continue
            if rows == s.rows:
                manifest["done"][s.id] = {"file": path.name, "rows": rows, "seconds": 0.0, "attempts": 1}


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    manifest["complete"] = len(manifest["done"]) == len(manifest["plan"])
    write_json(out_dir / MANIFEST, manifest, indent=None)


def part_path(out_dir: Path, shard_id: str) -> Path:
    return out_dir / f"part-{shard_id}.parquet"


# --- the work of one shard (runs on a worker) ------------------------------------------------------------


def _attempt(out_dir: Path, shard: Shard, run_token: str) -> int:
    """Leave a marker for this attempt; returns how many attempts this run has made on the shard."""
    folder = out_dir / "_attempts" / shard.id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run_token}-{os.getpid()}-{time.time_ns()}").touch()
    return sum(1 for p in folder.iterdir() if p.name.startswith(run_token))


def _to_table(out: Any):
    import pyarrow as pa

    if isinstance(out, pa.Table):
        return out
    if isinstance(out, dict):
        return pa.table(out)
    raise TypeError(f"a worker must return a pyarrow.Table or a dict of columns, got {type(out).__name__}")


def run_shard(worker: Any, shard: Shard, out_dir: Path, run_token: str, max_attempts: int) -> dict[str, Any]:
    """Read, process and write one shard; a user error becomes a result with ``error`` set (not raised),
    so the other shards go on."""
    import pyarrow.parquet as pq

    t0 = time.time()
    attempts = _attempt(out_dir, shard, run_token)
    result: dict[str, Any] = {
        "shard": shard.id,
        "rows": 0,
        "seconds": 0.0,
        "attempts": attempts,
        "pid": os.getpid(),
        "error": "",
        "error_kind": "",
    }
    if attempts > max_attempts:
        result.update(
            error=f"shard {shard.id} failed {attempts - 1} times (its worker crashed each time)",
            error_kind="DataError",
        )
        return result
    try:
        rows = read_shard(shard)
        table = _to_table(worker.process(shard, rows))
    except AlignlabError as e:
        result.update(
            error=e.one_line(), error_kind=type(e).__name__, what=e.what, where=e.where or "", fix=e.fix or ""
        )
        return result
    if table.num_rows != shard.rows:
        raise RuntimeError(f"job returned {table.num_rows} rows for shard {shard.id} of {shard.rows} rows")
    with atomic_path(part_path(out_dir, shard.id)) as tmp:
        pq.write_table(table, tmp)
    result.update(rows=table.num_rows, seconds=round(time.time() - t0, 4))
    return result


class _RayShardWorker:
    """The callable class of the actor pool: ``job.open()`` once per actor, then one shard per call."""

    def __init__(self, job: Any, out_dir: str, run_token: str, max_attempts: int):
        self.out_dir = Path(out_dir)
        self.run_token = run_token
        self.max_attempts = max_attempts
        self.open_error: AlignlabError | None = None
        try:
            self.worker = job.open()
        except AlignlabError as e:  # e.g. a missing model on this node: reported per shard, in one line
            self.worker, self.open_error = None, e

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        if self.open_error is not None:
            e = self.open_error
            results = [
                {
                    "shard": json.loads(s)["id"],
                    "rows": 0,
                    "seconds": 0.0,
                    "attempts": 1,
                    "pid": os.getpid(),
                    "error": e.one_line(),
                    "error_kind": type(e).__name__,
                    "what": e.what,
                    "where": e.where or "",
                    "fix": e.fix or "",
                }
                for s in batch["shard"]
            ]
        else:
            results = [
                run_shard(
                    self.worker,
                    Shard.from_dict(json.loads(s)),
                    self.out_dir,
                    self.run_token,
                    self.max_attempts,
                )
                for s in batch["shard"]
            ]
        keys = ("shard", "rows", "seconds", "attempts", "pid", "error", "error_kind", "what", "where", "fix")
        return {k: [r.get(k, "") for r in results] for k in keys}


# --- Ray ----------------------------------------------------------------------------------------------------


def import_ray() -> Any:
    """``ray`` and ``ray.data``, or a :class:`DependencyError` naming the ``scale`` extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DependencyError(
            "Ray is not installed",
            where="--engine ray",
            fix="pip install 'alignlab[scale]' (or use --engine local)",
        ) from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (one line, a :class:`ConfigError`) when nothing answers at a cluster address.

    ``ray.init`` on a dead address retries for a long time; a plain TCP connect answers in milliseconds
    (refused) or after ``timeout`` seconds (nothing there).
    """
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"cannot read the Ray address {address!r}",
            where="--ray-address",
            fix="give host:port of the head node (e.g. 10.0.0.5:6379), ray://host:10001 or auto",
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address}: {e.strerror or e}",
            where="--ray-address",
            fix="start it with `ray start --head` on the head node and check the address and "
            "firewall, or use --ray-cpus N for a Ray on this machine",
        ) from None


def _use_auth_token() -> None:
    """Send the cluster token when one is at hand: `ray start` (Ray >= 2.5x) turns token authentication on,
    while a client sends its token only with RAY_AUTH_MODE=token (a cluster without authentication
    accepts that too). An explicit RAY_AUTH_MODE is left alone."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or path.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


@contextlib.contextmanager
def ray_session(opts: EngineOptions) -> Iterator[Any]:
    """A connected Ray: the one already started in this process, a cluster by address, or a new local one
    (shut down again at the end)."""
    if opts.ray_address and "ray" not in sys.modules:
        _use_auth_token()  # read by Ray when it is imported
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    quiet = {"log_to_driver": not opts.quiet, "logging_level": "warning"}
    if opts.ray_address:
        check_reachable(opts.ray_address, opts.connect_timeout_s)
        try:
            ray.init(address=opts.ray_address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(
                f"cannot connect to the Ray cluster at {opts.ray_address}: {str(e).splitlines()[0]}",
                where="--ray-address",
                fix="check that `ray status --address ADDR` works here; a cluster with token "
                "authentication needs its token in ~/.ray/auth_token or RAY_AUTH_TOKEN",
            ) from None
    else:
        # address="local": a new Ray of our own, even when a `ray start` cluster runs on this machine
        ray.init(address="local", num_cpus=opts.ray_cpus or os.cpu_count(), include_dashboard=False, **quiet)
    try:
        yield ray
    finally:
        ray.shutdown()


def _ray_results(
    ray: Any,
    job: Any,
    pending: Sequence[Shard],
    out_dir: Path,
    run_token: str,
    opts: EngineOptions,
    workers: int,
) -> Iterator[dict[str, Any]]:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not opts.quiet
    # One block per shard, one shard per call: a finished shard is reported as soon as it is written.
    ds = ray.data.from_items(
        [{"shard": json.dumps(s.to_dict())} for s in pending], override_num_blocks=len(pending)
    )
    ds = ds.map_batches(
        _RayShardWorker,
        batch_size=1,
        batch_format="numpy",
        zero_copy_batch=False,
        fn_constructor_args=(job, str(out_dir), run_token, opts.max_attempts),
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
    )
    yield from ds.iter_rows()


def _ray_workers(ray: Any, opts: EngineOptions, n_pending: int) -> int:
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(opts.workers or cpus, n_pending))


# --- the driver ---------------------------------------------------------------------------------------------


def run_job(
    job: Any, shards: Sequence[Shard], out_dir: str | os.PathLike, opts: EngineOptions | None = None
) -> RunReport:
    """Run ``job`` over ``shards`` into ``out_dir`` (resuming a previous run there); see the module docstring.

    Raises the first failed shard's :class:`DataError` after every other shard has run and been recorded.
    """
    opts = opts or EngineOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = _start_manifest(job, shards, out_dir)
    manifest["failed"] = {}
    pending = [s for s in shards if s.id not in manifest["done"]]
    report = RunReport(out_dir, len(shards), skipped=len(shards) - len(pending), engine=opts.engine)
    _write_manifest(out_dir, manifest)
    if report.skipped and not opts.quiet:
        info(f"resuming {out_dir}: {report.skipped} of {len(shards)} shard(s) already done")
    run_token = uuid.uuid4().hex[:12]

    last_write = [time.time()]

    def record(res: dict[str, Any]) -> None:
        sid = str(res["shard"])
        retries = int(res["attempts"]) - 1
        report.retries += retries
        manifest["retries"] = int(manifest.get("retries", 0)) + retries
        if res["error"]:
            manifest["failed"][sid] = {
                k: res.get(k, "") for k in ("error", "error_kind", "what", "where", "fix")
            }
            report.failed.append({"shard": sid, **manifest["failed"][sid]})
        else:
            manifest["done"][sid] = {
                "file": part_path(out_dir, sid).name,
                "rows": int(res["rows"]),
                "seconds": float(res["seconds"]),
                "attempts": int(res["attempts"]),
            }
            report.ran += 1
            report.rows += int(res["rows"])
        # Rewriting a manifest of many thousand shards after each one would cost O(shards²); at most once
        # per MANIFEST_EVERY_S (shards written in between are adopted from their files on resume).
        if res["error"] or time.time() - last_write[0] >= MANIFEST_EVERY_S:
            _write_manifest(out_dir, manifest)
            last_write[0] = time.time()

    if pending:
        t0 = time.time()
        try:
            if opts.engine == "local":
                worker = job.open()
                t0 = time.time()
                for s in pending:
                    record(run_shard(worker, s, out_dir, run_token, opts.max_attempts))
            else:
                t_start = time.time()
                with ray_session(opts) as ray:
                    report.startup_s = round(time.time() - t_start, 2)
                    report.workers = _ray_workers(ray, opts, len(pending))
                    t0 = time.time()
                    for res in _ray_results(ray, job, pending, out_dir, run_token, opts, report.workers):
                        record(res)
        finally:  # also when interrupted: the shards finished so far are recorded
            _write_manifest(out_dir, manifest)
        report.seconds = time.time() - t0
    missing = [s.id for s in pending if s.id not in manifest["done"] and s.id not in manifest["failed"]]
    if missing:  # should not happen: every pending shard returns a result or raises
        raise RuntimeError(f"shards without a result: {missing[:5]}")
    if report.failed:
        first = report.failed[0]
        more = (
            f" ({len(report.failed)} shards failed; the others' output is kept)"
            if len(report.failed) > 1
            else ""
        )
        # The worker's error class (DataError for a bad row, DependencyError for a missing model ...).
        cls = getattr(errors_module, str(first.get("error_kind") or ""), DataError)
        cls = cls if isinstance(cls, type) and issubclass(cls, AlignlabError) else DataError
        raise cls(
            f"{first.get('what') or first['error']}{more}",
            where=first.get("where") or f"shard {first['shard']}",
            fix=(first.get("fix") or "fix the input") + "; then run the same command again to finish the "
            "remaining shards (a row deleted or added shifts the shards: then use a new output folder)",
        )
    return report


def read_output(out_dir: str | os.PathLike, columns: Sequence[str] | None = None):
    """The whole output of a finished run as one ``pyarrow.Table``, rows in plan (input) order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    manifest = load_manifest(out_dir)
    if manifest is None:
        raise DataError(
            "no manifest: not an output folder of a sharded job",
            where=str(out_dir),
            fix="give the folder a job wrote",
        )
    ids = [s["id"] for s in manifest["plan"]]
    missing = [i for i in ids if i not in manifest["done"]]
    if missing:
        raise DataError(
            f"the run is not finished: {len(missing)} of {len(ids)} shard(s) missing",
            where=str(out_dir / MANIFEST),
            fix="run the same command again to finish it",
        )
    tables = [
        pq.read_table(out_dir / manifest["done"][i]["file"], columns=list(columns) if columns else None)
        for i in ids
    ]
    return pa.concat_tables(tables)
