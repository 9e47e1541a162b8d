"""Does the same command give the same numbers on another kind of CPU? Measured by changing the kernels.

Two machines of the same kind run the same kernels; machines of different kinds do not: PyTorch picks
its vectorised kernels by CPU capability (AVX-512, AVX2, or none) and MKL picks its own code path, and
different kernels sum floating-point numbers in different orders. This script runs one short training
in fresh processes under each kernel choice a real machine could make — PyTorch's
``ATEN_CPU_CAPABILITY`` (avx512 / avx2 / default) crossed with MKL's ``MKL_ENABLE_INSTRUCTIONS`` — and
compares what comes out: the weights (SHA-256 of the saved tensors), the training loss and the test
metrics. Repeats under the *same* setting are compared as well, which is the determinism guarantee.

    python benchmarks/cpu_kind_repeatability.py --out runs/bench-cpu-kinds [--epochs 2]

The table goes to stdout and docs/reproducibility.md; the JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = [
    "--set",
    "data.train=300",
    "--set",
    "data.val=60",
    "--set",
    "data.test=200",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.warmup_steps=10",
]
# Every library that picks kernels by CPU: PyTorch's own (ATen), MKL (BLAS) and oneDNN (convolutions).
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
KINDS = [
    ("as detected (this machine)", {}),
    ("as detected, repeated", {}),
    ("AVX2 in ATen only", {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("AVX2 in ATen, MKL and oneDNN", AVX2),
    ("AVX2 in ATen, MKL and oneDNN, repeated", AVX2),
    (
        "no vector kernels (ATen default, MKL SSE4.2, oneDNN SSE4.1)",
        {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    ),
]


def run_once(out: Path, env_extra: dict[str, str], epochs: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0", **env_extra}
    cmd = [
        sys.executable,
        "-m",
        "alignlab",
        "train",
        "--out",
        str(out),
        *SETTINGS,
        "--set",
        f"train.epochs={epochs}",
        "--quiet",
    ]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    result = json.loads((out / "results.json").read_text())
    weights = hashlib.sha256((out / "best" / "model.safetensors").read_bytes()).hexdigest()
    losses = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    train_losses = [r["loss"] for r in losses if "loss" in r]
    probe = [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"]
    capability = subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout.strip()
    return {
        "metrics": result["metrics"],
        "weights_sha256": weights,
        "last_loss": train_losses[-1],
        "capability": capability,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-cpu-kinds"), help="JSON results folder")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs of the tiny run (default 2)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, env) in enumerate(KINDS):
            r = run_once(Path(tmp) / f"run{i}", env, args.epochs)
            rows.append({"kind": label, "env": env, **r})
    base = rows[0]
    print(
        "| kernels | torch reports | weights = first row | last train loss "
        "| Δ loss vs first | RSUM | Δ RSUM |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        same = "yes" if r["weights_sha256"] == base["weights_sha256"] else "no"
        print(
            f"| {r['kind']} | {r['capability']} | {same} | {r['last_loss']:.6f} | "
            f"{r['last_loss'] - base['last_loss']:+.2e} | {r['metrics']['rsum']:.2f} | "
            f"{r['metrics']['rsum'] - base['metrics']['rsum']:+.2f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_kinds.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
