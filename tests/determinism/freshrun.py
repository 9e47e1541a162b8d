"""Run an alignlab command twice in fresh processes and compare everything it wrote.

Each run gets its own working folder (all paths in a command are relative to it, so file names recorded in
results are equal), its own ``PYTHONHASHSEED`` (set and dict order of strings differ between the two) and
its own ``ALIGNLAB_CACHE`` (nothing computed by one run is read by the other). The test suite's
``conftest.py`` seeding does not reach a subprocess: only the command's own seeding counts.

Outputs are compared byte for byte, except:

* JSON and JSONL: fields that measure time (wall time, finish date, throughput) are dropped first, and so
  are the two variables the runs differ in on purpose where a manifest records the environment;
* ``torch.save`` files (``.pt``): their zip records are named after the temporary file they were written
  to, so the loaded objects are compared instead, tensors bit for bit (the saved RNG states included);
* stdout and run logs (``log.txt``): dates, process ids, durations and rates are masked;
* ``tensorboard/`` folders are left out: event files are named after the host, time and process, and hold
  wall times (their scalars are the ones ``log.jsonl`` holds, which is compared).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HASH_SEEDS = ("1", "2")
# Keys whose values measure time, not results.
TIME_KEY = re.compile(
    r"(^|_)(wall|seconds|secs|elapsed|utc|date|started|finished|duration|timing)($|_)"
    r"|_s$|_s_per_|_time$|^time"
)
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d([.,]\d+)?Z?")
_PID = re.compile(r"\bpid \d+")
# Progress and epoch lines: "elapsed 0:01, ETA 0:00", "samples_s=13", "train_s=0.17".
_CLOCK = re.compile(r"\b(elapsed|ETA) [\d:?]+|\b\w*_s=[\d.]+")
_DURATION = re.compile(r"\b\d+(\.\d+)?( ?s\b| [a-z]+/s\b)")


def env_for(hash_seed: str, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ALIGNLAB_"))}
    env.update(
        {
            "PYTHONHASHSEED": hash_seed,
            "ALIGNLAB_CACHE": str(cache),
            "ALIGNLAB_QUIET": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "MPLBACKEND": "Agg",
        }
    )
    return env


@dataclass
class Step:
    """One command: its arguments (paths relative to the run folder) and the outputs to compare."""

    name: str
    args: list[str]
    outputs: list[str] = field(default_factory=list)  # files or folders (every file inside is compared)
    stdout: bool = False  # compare stdout too (for commands that only print)


def run_in(
    folder: Path, hash_seed: str, args: list[str], timeout: float = 300
) -> subprocess.CompletedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "alignlab", *args],
        cwd=folder,
        env=env_for(hash_seed, folder / ".cache"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_twice(root: Path, step: Step, pool: cf.Executor) -> tuple[subprocess.CompletedProcess, ...]:
    """Start the step in both run folders at once; return both finished processes."""
    futures = [pool.submit(run_in, root / f"run{seed}", seed, step.args) for seed in HASH_SEEDS]
    return tuple(f.result() for f in futures)


def failures(step: Step, procs: tuple[subprocess.CompletedProcess, ...]) -> list[str]:
    return [
        f"{step.name} failed (PYTHONHASHSEED={seed}, exit {p.returncode}):\n{p.stderr[-2000:]}"
        for seed, p in zip(HASH_SEEDS, procs)
        if p.returncode != 0
    ]


# The variables the two runs differ in on purpose; a manifest that records the environment shows them.
VARIED = {"PYTHONHASHSEED", "ALIGNLAB_CACHE"}


def strip_times(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: strip_times(v) for k, v in obj.items() if not TIME_KEY.search(str(k)) and k not in VARIED}
    if isinstance(obj, list):
        return [strip_times(v) for v in obj]
    return obj


def _canonical_json_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [
            json.dumps(strip_times(json.loads(ln)), sort_keys=True) for ln in text.splitlines() if ln.strip()
        ]
    return [json.dumps(strip_times(json.loads(text)), sort_keys=True)]


def _same_torch_objects(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        # Bit for bit (NaN included): compare the raw bytes.
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(
                torch.equal(
                    a.contiguous().view(-1).view(torch.uint8), b.contiguous().view(-1).view(torch.uint8)
                )
            )
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(_same_torch_objects(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return (
            type(a) is type(b) and len(a) == len(b) and all(_same_torch_objects(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, str) and isinstance(b, str) and a[:1] in "[{" and a != b:  # JSON kept in a checkpoint
        try:
            return strip_times(json.loads(a)) == strip_times(json.loads(b))
        except json.JSONDecodeError:
            return False
    return a == b or (a != a and b != b)  # NaN equals NaN here


def differences(a: Path, b: Path) -> list[str]:
    """Human-readable differences between two outputs (files or folders); empty when they match."""
    if a.is_dir():
        files_a, files_b = _files(a), _files(b) if b.is_dir() else []
        if files_a != files_b:
            return [f"{a.name}: different files: {sorted(set(map(str, files_a)) ^ set(map(str, files_b)))}"]
        return [d for rel in files_a for d in differences(a / rel, b / rel)]
    if not b.is_file():
        return [f"{b} is missing"]
    if a.suffix in (".json", ".jsonl"):
        la, lb = _canonical_json_lines(a), _canonical_json_lines(b)
        bad = [i for i, (x, y) in enumerate(zip(la, lb)) if x != y]
        if len(la) != len(lb):
            return [f"{a.name}: {len(la)} vs {len(lb)} records"]
        return [
            f"{a.name} record {i}: {_first_key_difference(json.loads(la[i]), json.loads(lb[i]))}"
            for i in bad[:3]
        ]
    if a.suffix == ".pt":
        import torch

        oa = torch.load(a, map_location="cpu", weights_only=True)
        ob = torch.load(b, map_location="cpu", weights_only=True)
        return [] if _same_torch_objects(oa, ob) else [f"{a.name}: the saved tensors differ"]
    if a.name == "log.txt" or a.suffix == ".log":  # a run's text log: compare it without its clock
        ta, tb = (mask_clock(p.read_text(encoding="utf-8")) for p in (a, b))
        return [] if ta == tb else [f"{a.name}: lines differ: {_first_difference(ta, tb)}"]
    return [] if a.read_bytes() == b.read_bytes() else [f"{a.name}: bytes differ"]


def mask_clock(text: str) -> str:
    """``text`` with dates, times, process ids and durations replaced by placeholders."""
    text = _TIMESTAMP.sub("<date>", text)
    text = _PID.sub("pid <n>", text)
    text = _CLOCK.sub("<clock>", text)
    return _DURATION.sub("<t>", text)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}.{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _flatten(val, f"{prefix}[{i}]").items()}
    return {prefix: obj}


def _first_key_difference(a: Any, b: Any) -> str:
    fa, fb = _flatten(a), _flatten(b)
    keys = [k for k in sorted(set(fa) | set(fb)) if fa.get(k, "<absent>") != fb.get(k, "<absent>")]
    return "; ".join(
        f"{k}: {str(fa.get(k, '<absent>'))[:120]} != {str(fb.get(k, '<absent>'))[:120]}" for k in keys[:5]
    )


def _first_difference(a: str, b: str) -> str:
    for x, y in zip(a.splitlines(), b.splitlines()):
        if x != y:
            return f"{x[:300]!r} != {y[:300]!r}"
    return f"{len(a.splitlines())} vs {len(b.splitlines())} lines"


def _files(folder: Path) -> list[Path]:
    return sorted(
        p.relative_to(folder)
        for p in folder.rglob("*")
        if p.is_file() and "tensorboard" not in p.relative_to(folder).parts
    )


def compare(root: Path, step: Step, procs: tuple[subprocess.CompletedProcess, ...]) -> list[str]:
    out = []
    for rel in step.outputs:
        out += [
            f"{step.name}: {d}"
            for d in differences(root / f"run{HASH_SEEDS[0]}" / rel, root / f"run{HASH_SEEDS[1]}" / rel)
        ]
    if step.stdout:
        sa, sb = (mask_clock(p.stdout) for p in procs)
        if sa != sb:
            out.append(f"{step.name}: stdout differs:\n{sa[-800:]}\n---\n{sb[-800:]}")
    return out


def write_both(root: Path, rel: str, text: str) -> None:
    """An input file, written identically into both run folders."""
    for seed in HASH_SEEDS:
        p = root / f"run{seed}" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
