"""`alignlab mmt train|eval` on ShapesWorld and on parallel text, and bad input."""

from __future__ import annotations

import json

import pytest

from alignlab.cli import main

TINY = [
    "--set",
    "model.width=32",
    "--set",
    "model.heads=2",
    "--set",
    "model.encoder_layers=1",
    "--set",
    "model.decoder_layers=1",
    "--set",
    "model.max_tgt_len=40",
    "--set",
    "train.batch_size=32",
]


def test_train_and_eval_an_image_model_on_shapes(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "mmt",
                "train",
                "--out",
                str(run),
                "--fusion",
                "gated",
                "--shapes-train",
                "24",
                "--shapes-val",
                "6",
                "--epochs",
                "1",
                "--quiet",
                *TINY,
                "--set",
                "visual.images=48",
                "--set",
                "visual.epochs=1",
                "--set",
                "visual.val_images=8",
            ]
        )
        == 0
    )
    for name in (
        "config.yaml",
        "model.pt",
        "visual.pt",
        "src_tokenizer.json",
        "tgt_tokenizer.json",
        "train/log.jsonl",
        "results.json",
    ):
        assert (run / name).is_file(), name
    res = json.loads((run / "results.json").read_text())
    assert "tok:zh" in res["metrics"]["bleu_signature"] and "sense_acc_incongruent" in res["metrics"]
    assert res["manifest"]["config_sha256"]
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "mmt",
                "eval",
                "--run",
                str(run),
                "--shapes-test",
                "6",
                "--out",
                str(out),
                "--translations",
                str(tmp_path / "hyp.txt"),
                "--quiet",
            ]
        )
        == 0
    )
    ev = json.loads(out.read_text())
    assert ev["metrics"]["n"] == 30 and len((tmp_path / "hyp.txt").read_text().splitlines()) == 30
    assert "contrastive_acc" in ev["metrics"]


@pytest.fixture
def parallel(tmp_path):
    en = ["a man rides a bike", "two dogs play", "a bat in a cave", "a crane lifts steel"]
    zh = ["一个男人骑自行车", "两只狗在玩", "山洞里的一只蝙蝠", "一台起重机吊起钢材"]
    paths = {}
    for name, lines in (("t.en", en), ("t.zh", zh)):
        paths[name] = tmp_path / name
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def test_train_text_only_on_parallel_files(tmp_path, parallel):
    args = [
        "mmt",
        "train",
        "--data",
        "parallel",
        "--src",
        str(parallel["t.en"]),
        "--tgt",
        str(parallel["t.zh"]),
        "--val-src",
        str(parallel["t.en"]),
        "--val-tgt",
        str(parallel["t.zh"]),
        "--epochs",
        "1",
        "--quiet",
        *TINY,
    ]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]["n"] == 4
    assert (
        main(
            [
                "mmt",
                "eval",
                "--run",
                str(tmp_path / "run"),
                "--src",
                str(parallel["t.en"]),
                "--tgt",
                str(parallel["t.zh"]),
                "--quiet",
            ]
        )
        == 0
    )


def test_bad_parallel_input_is_one_line_with_file_and_line(tmp_path, parallel, capsys):
    base = [
        "mmt",
        "train",
        "--data",
        "parallel",
        "--out",
        str(tmp_path / "r"),
        "--val-src",
        str(parallel["t.en"]),
        "--val-tgt",
        str(parallel["t.zh"]),
    ]
    short = tmp_path / "short.zh"
    short.write_text("一个男人骑自行车\n两只狗在玩\n", encoding="utf-8")
    assert main([*base, "--src", str(parallel["t.en"]), "--tgt", str(short)]) == 2
    err = capsys.readouterr().err
    assert "misaligned" in err and f"{short}:3" in err and err.count("\n") == 1
    bad = tmp_path / "bad.zh"
    bad.write_bytes("一个男人\n".encode() + b"\xff\xfe\n" + "一只\n一台\n".encode())
    assert main([*base, "--src", str(parallel["t.en"]), "--tgt", str(bad)]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
    assert (
        main([*base, "--src", str(parallel["t.en"]), "--tgt", str(parallel["t.zh"]), "--fusion", "gated"])
        == 2
    )
    assert "no images" in capsys.readouterr().err
    assert main(["mmt", "eval", "--run", str(tmp_path / "nothing")]) == 2
    assert "not an MMT run folder" in capsys.readouterr().err
