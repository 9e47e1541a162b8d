"""`alignlab ambiguity wsd|score|select|stats`, and bad input: empty lines, bad bytes, misaligned files."""

from __future__ import annotations

import json

import pytest

from alignlab.cli import main

CAPTIONS = [
    "a man holding a baseball bat",
    "a bat flew out of the cave",
    "a crane lifting steel beams",
    "two dogs running on the beach",
    "a seal resting on a rock by the sea",
]
CHINESE = [
    "一个男人拿着棒球棒",
    "一只蝙蝠飞出了山洞",
    "一台起重机吊起钢梁",
    "两只狗在海滩上奔跑",
    "一只海豹在海边的岩石上休息",
]


@pytest.fixture
def files(tmp_path):
    en, zh = tmp_path / "c.en", tmp_path / "c.zh"
    en.write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    zh.write_text("\n".join(CHINESE) + "\n", encoding="utf-8")
    return en, zh


def test_score_select_and_stats_end_to_end(files, tmp_path, capsys, wn):
    en, zh = files
    scores = tmp_path / "scores.jsonl"
    assert main(["ambiguity", "score", str(en), "--out", str(scores), "--method", "mfs", "--quiet"]) == 0
    recs = [json.loads(x) for x in scores.read_text().splitlines()]
    assert [r["line"] for r in recs] == [1, 2, 3, 4, 5] and recs[2]["words"][0]["lemma"] == "crane"
    sel = tmp_path / "sel"
    assert (
        main(
            [
                "ambiguity",
                "select",
                "--scores",
                str(scores),
                "--zh",
                str(zh),
                "--n",
                "2",
                "--out",
                str(sel),
                "--method",
                "mfs",
                "--quiet",
            ]
        )
        == 0
    )
    picked = [json.loads(x) for x in (sel / "selection.jsonl").read_text().splitlines()]
    assert len(picked) == 2 and all(CHINESE[p["line"] - 1] == p["zh"] for p in picked)
    assert (sel / "selection.en").read_text().splitlines() == [p["text"] for p in picked]
    assert (sel / "selection.zh").read_text().splitlines() == [p["zh"] for p in picked]
    manifest = json.loads((sel / "manifest.json").read_text())
    assert manifest["selected"] == 2 and manifest["pool"] == 5 and "config_sha256" in manifest["manifest"]
    assert not [p for p in sel.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temp files
    out = tmp_path / "stats.json"
    assert (
        main(
            [
                "ambiguity",
                "stats",
                "--corpus",
                f"a={en}",
                "--corpus",
                f"b={scores}",
                "--method",
                "mfs",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    stats = json.loads(out.read_text())
    assert stats["corpora"]["a"]["captions"] == stats["corpora"]["b"]["captions"] == 5
    assert "| share_with_ambiguous_word |" in capsys.readouterr().out


def test_wsd_command_prints_senses(capsys, wn):
    assert main(["ambiguity", "wsd", "the seal swam in the sea", "seal", "--method", "mfs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[1] == "sealing_wax.n.01" and len(out) == 9


@pytest.mark.parametrize(
    "content, problem, line",
    [
        (b"a bat\n\na crane\n", "empty line", 2),
        (b"a bat\na cr\xffane\n", "not valid UTF-8", 2),
    ],
)
def test_bad_caption_files_name_file_and_line(tmp_path, capsys, content, problem, line, wn):
    bad = tmp_path / "bad.en"
    bad.write_bytes(content)
    assert main(["ambiguity", "score", str(bad), "--out", str(tmp_path / "s.jsonl"), "--method", "mfs"]) == 2
    err = capsys.readouterr().err
    assert problem in err and f"{bad}:{line}" in err
    assert not (tmp_path / "s.jsonl").exists()


def test_misaligned_translations_are_refused(files, tmp_path, capsys, wn):
    en, zh = files
    zh.write_text("\n".join(CHINESE[:3]) + "\n", encoding="utf-8")
    assert (
        main(
            [
                "ambiguity",
                "select",
                "--input",
                str(en),
                "--zh",
                str(zh),
                "--n",
                "2",
                "--out",
                str(tmp_path / "sel"),
                "--method",
                "mfs",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "misaligned" in err and f"{zh}:4" in err
    assert not (tmp_path / "sel" / "selection.jsonl").exists()


def test_bad_corpus_spec_and_n(files, tmp_path, capsys):
    en, _ = files
    assert main(["ambiguity", "stats", "--corpus", str(en), "--method", "mfs"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert main(["ambiguity", "select", "--input", str(en), "--n", "0", "--out", str(tmp_path)]) == 2


def test_read_parallel_names_the_first_unpaired_line(tmp_path):
    from alignlab.core.errors import DataError
    from alignlab.data.corpus import read_parallel

    a, b = tmp_path / "x.en", tmp_path / "x.zh"
    a.write_text("one\ntwo\nthree\n")
    b.write_text("一\n二\n")
    with pytest.raises(DataError, match=r"x\.en has 3 lines, x\.zh has 2") as e:
        read_parallel(a, b)
    assert e.value.where == f"{b}:3"
    assert read_parallel(a, a, limit=2) == (["one", "two"], ["one", "two"])
