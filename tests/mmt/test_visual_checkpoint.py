"""`mmt train` checkpoints the image tower's pretraining: re-running an interrupted run reuses it and ends
with the same numbers; a run folder pretrained with other settings is refused."""

from __future__ import annotations

import json
import shutil

from alignlab.cli import main

TINY = [
    "--fusion",
    "gated",
    "--shapes-train",
    "6",
    "--shapes-val",
    "2",
    "--epochs",
    "1",
    "--quiet",
    "--set",
    "model.width=16",
    "--set",
    "model.heads=2",
    "--set",
    "model.encoder_layers=1",
    "--set",
    "model.decoder_layers=1",
    "--set",
    "model.max_tgt_len=40",
    "--set",
    "train.batch_size=16",
    "--set",
    "visual.images=32",
    "--set",
    "visual.epochs=1",
    "--set",
    "visual.val_images=8",
]


def _interrupt_before_the_first_translation_checkpoint(run):
    """Leave what a run killed early in the translation training has written: visual.pt and train/."""
    for name in ("results.json", "model.pt", "config.yaml", "src_tokenizer.json", "tgt_tokenizer.json"):
        (run / name).unlink(missing_ok=True)
    shutil.rmtree(run / "train")
    (run / "train").mkdir()


def test_a_rerun_after_an_interruption_reuses_the_pretrained_tower_and_gets_the_same_numbers(
    tmp_path, monkeypatch, capsys
):
    import alignlab.mmt.train as mmt_train

    run = tmp_path / "run"
    assert main(["mmt", "train", "--out", str(run), *TINY]) == 0
    first = json.loads((run / "results.json").read_text())
    _interrupt_before_the_first_translation_checkpoint(run)
    (run / ".visual.pt.abcd1234.tmp").write_bytes(b"an interrupted write")

    def no_pretraining(*args, **kwargs):
        raise AssertionError("the tower was pretrained again")

    monkeypatch.setattr(mmt_train, "pretrain_visual_encoder", no_pretraining)
    capsys.readouterr()
    assert main(["mmt", "train", "--out", str(run), *TINY]) == 0
    again = json.loads((run / "results.json").read_text())
    assert again["metrics"] == first["metrics"] and again["visual_encoder"] == first["visual_encoder"]
    assert not (run / ".visual.pt.abcd1234.tmp").exists()  # the interrupted write's temp file is gone


def test_a_tower_pretrained_with_other_settings_is_not_reused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["mmt", "train", "--out", str(run), *TINY]) == 0
    _interrupt_before_the_first_translation_checkpoint(run)
    capsys.readouterr()
    assert main(["mmt", "train", "--out", str(run), *TINY, "--set", "visual.lr=0.001"]) == 2
    err = capsys.readouterr().err
    assert "pretrained with other settings" in err and str(run / "visual.pt") in err and err.count("\n") == 1


def test_a_run_killed_after_the_visual_pretraining_counts_as_a_run_to_resume(tmp_path):
    from alignlab.core.config import check_run_dir

    (tmp_path / "visual.pt").write_bytes(b"x")  # all that exists before train/ is created
    assert check_run_dir(tmp_path, finished=("results.json",)) == tmp_path  # resumed, not "not an output"
