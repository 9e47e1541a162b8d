"""The files the bad-input corpus points at: one finished run of each kind, a small data export, and bad
files.

Built once per test module (``build(root)``); the cases only read them, and the corpus checks that the
finished runs are byte-identical before and after every case.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

# The settings of the finished tiny retrieval run; a case that repeats them targets "the same command again".
TRAIN_SETTINGS = [
    "--set",
    "data.train=24",
    "--set",
    "data.val=8",
    "--set",
    "data.test=8",
    "--set",
    "train.epochs=1",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.warmup_steps=0",
]
MMT_SETTINGS = ["--shapes-train", "6", "--shapes-val", "3", "--epochs", "1"]


def tree_hash(path: Path) -> str:
    """sha256 over every file's relative path, mode and bytes below ``path`` (or of ``path`` itself)."""
    h = hashlib.sha256()
    if not path.exists():
        return "absent"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*"))
    for p in files:
        rel = p.relative_to(path).as_posix() if p != path else p.name
        h.update(rel.encode() + b"\0")
        if p.is_file():
            h.update(oct(p.stat().st_mode & 0o777).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def build(root: Path, main) -> dict[str, str]:
    """Write the fixtures under ``root`` with the CLI ``main``; returns the placeholders the cases use."""
    fx = root / "fx"
    fx.mkdir(parents=True)
    run, mmt, data = root / "run", root / "mmt", root / "data"
    assert main(["train", "--out", str(run), *TRAIN_SETTINGS, "--quiet"]) == 0
    assert main(["mmt", "train", "--out", str(mmt), *MMT_SETTINGS, "--quiet"]) == 0
    assert (
        main(["data", "shapes", "--out", str(data), "--train", "4", "--val", "2", "--test", "4", "--quiet"])
        == 0
    )
    probe = root / "probe"
    assert (
        main(
            [
                "probe",
                "build",
                "--source",
                "shapes",
                "--out",
                str(probe),
                "--items-per-category",
                "2",
                "--quiet",
            ]
        )
        == 0
    )

    (fx / "plain.txt").write_text("hello\n")
    (fx / "en.txt").write_text("the bat flew over the bank\na seal on the rock\n")
    (fx / "hello.json").write_text(json.dumps({"hello": "world"}))
    (fx / "broken.json").write_text('{"metrics": {"a": 1,')
    (fx / "bigfield.csv").write_text("image,caption\nimg.png," + "x" * 200_000 + "\n")
    (fx / "coco_null.json").write_text(
        json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": None})
    )
    (fx / "coco_listid.json").write_text(
        json.dumps(
            {
                "images": [{"id": [1], "file_name": "a.png"}],
                "annotations": [{"image_id": [1], "caption": "a cat"}],
            }
        )
    )
    (fx / "bad.yaml").write_text("train:\n  lr: [0.1\n")
    (fx / "list.yaml").write_text("- 1\n- 2\n")
    (fx / "unknown_key.yaml").write_text("train:\n  epochs: 1\n  lrr: 0.1\n")
    (fx / "lr_nan.yaml").write_text("train:\n  epochs: 1\n  lr: .nan\n")
    (fx / "good.yaml").write_text("train:\n  epochs: 1\n  lr: 0.01\n")
    (fx / "instr.jsonl").write_text(
        "".join(
            json.dumps({"instruction": f"say {i}", "response": f"{i}", "task": "t" + str(i % 2)}) + "\n"
            for i in range(8)
        )
    )
    (fx / "grouped.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "instruction": f"say {i}",
                    "response": f"{i}",
                    "task": "t" + str(i % 2),
                    "group_id": "g" + str(i % 2),
                }
            )
            + "\n"
            for i in range(8)
        )
    )

    # Saved tiny models with one thing wrong each (copies of the finished run's best/ model).
    best = run / "best"
    for name in ("garbage", "trunc", "badjson", "badtok", "wrongarch"):
        shutil.copytree(best, fx / f"ckpt_{name}")
    (fx / "ckpt_garbage" / "model.safetensors").write_bytes(b"this is not a safetensors file" * 10)
    raw = (best / "model.safetensors").read_bytes()
    (fx / "ckpt_trunc" / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    (fx / "ckpt_badjson" / "model.json").write_text("[1, 2, 3]")
    (fx / "ckpt_badtok" / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    meta = json.loads((best / "model.json").read_text())
    meta["config"]["width"] = meta["config"].get("width", 128) * 2
    (fx / "ckpt_wrongarch" / "model.json").write_text(json.dumps(meta))
    (fx / "garbage.safetensors").write_bytes(b"\x00\x01garbage")

    # An MMT run whose model.pt is a text file.
    shutil.copytree(mmt, fx / "mmt_textmodel")
    (fx / "mmt_textmodel" / "model.pt").write_text("not a model\n")

    # A Hugging Face folder whose weights are a pickle (pytorch_model.bin): must be refused, not loaded.
    hf = fx / "hf_pickle"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]}))
    import pickle

    (hf / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))

    for p in [fx, run, mmt, data, probe]:
        for f in p.rglob("*"):
            os.utime(f, (0, 0))
    return {"fx": str(fx), "run": str(run), "mmt": str(mmt), "data": str(data), "probe": str(probe)}


FINISHED = ("run", "mmt", "data", "probe", "fx")
