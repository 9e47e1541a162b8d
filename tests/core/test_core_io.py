"""Atomic writes and line-numbered readers (alignlab.core.io)."""

from __future__ import annotations

import json
import os

import pytest

from alignlab.core.errors import DataError
from alignlab.core.io import (
    atomic_path,
    read_csv,
    read_json,
    read_jsonl,
    read_lines,
    to_jsonable,
    write_bytes,
    write_json,
    write_jsonl,
    write_text,
)


def _leftovers(folder):
    """Names of every file in ``folder``, temp files of atomic writes included."""
    return sorted(p.name for p in folder.iterdir())


class Boom(RuntimeError):
    pass


def test_atomic_path_that_raises_midway_leaves_no_file_and_no_temp_file(tmp_path):
    target = tmp_path / "result.json"
    with pytest.raises(Boom), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text('{"half": ')
        raise Boom
    assert _leftovers(tmp_path) == []


def test_atomic_path_that_raises_leaves_the_existing_file_untouched(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old complete content")
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("new half")
        raise Boom
    assert target.read_text() == "old complete content"
    assert _leftovers(tmp_path) == ["result.json"]


def test_atomic_path_replaces_the_file_on_success_and_creates_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "x.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"\x00\x01")
        assert not target.exists()  # nothing visible until the block finishes
    assert target.read_bytes() == b"\x00\x01"
    assert _leftovers(target.parent) == ["x.bin"]


def test_write_jsonl_whose_records_raise_midway_writes_nothing(tmp_path):
    target = tmp_path / "log.jsonl"
    target.write_text('{"old": 1}\n')

    def records():
        yield {"a": 1}
        yield {"a": 2}
        raise Boom

    with pytest.raises(Boom):
        write_jsonl(target, records())
    assert target.read_text() == '{"old": 1}\n'
    assert _leftovers(tmp_path) == ["log.jsonl"]


def test_write_json_that_cannot_serialise_leaves_the_old_file(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"ok": True})
    with pytest.raises(TypeError):
        write_json(target, {"bad": object()})
    assert read_json(target) == {"ok": True}
    assert _leftovers(tmp_path) == ["r.json"]


def test_writers_round_trip_text_bytes_json_and_jsonl(tmp_path):
    write_text(tmp_path / "t.txt", "héllo 你好\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo 你好\n"
    write_bytes(tmp_path / "b.bin", b"\xff\x00")
    assert (tmp_path / "b.bin").read_bytes() == b"\xff\x00"
    n = write_jsonl(tmp_path / "r.jsonl", [{"a": 1}, {"b": "你"}])
    assert n == 2
    assert [{k: v for k, v in r.items() if k != "_line"} for r in read_jsonl(tmp_path / "r.jsonl")] == [
        {"a": 1},
        {"b": "你"},
    ]


def test_to_jsonable_converts_numpy_torch_paths_sets_and_nan(tmp_path):
    import numpy as np
    import torch

    out = to_jsonable(
        {
            "a": np.float32(0.5),
            "b": torch.tensor([1, 2]),
            "c": tmp_path,
            "d": {3, 1},
            "e": float("nan"),
            4: (1, 2),
        }
    )
    assert out == {"a": 0.5, "b": [1, 2], "c": str(tmp_path), "d": [1, 3], "e": None, "4": [1, 2]}
    json.dumps(out, allow_nan=False)


# --- readers ------------------------------------------------------------------------------------------


def test_read_jsonl_names_file_and_line_of_bad_json(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3,,}\n')
    with pytest.raises(DataError) as e:
        read_jsonl(p)
    assert e.value.where == f"{p}:4"
    assert "invalid JSON" in e.value.what


def test_read_jsonl_skips_blank_lines_and_keeps_true_line_numbers(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n\n  \n{"a": 2}\n')
    assert [(r["a"], r["_line"]) for r in read_jsonl(p)] == [(1, 1), (2, 4)]


def test_read_jsonl_names_the_line_of_a_record_lacking_a_required_field(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"image": "a.png", "caption": "x"}\n{"image": "b.png"}\n')
    with pytest.raises(DataError) as e:
        read_jsonl(p, required=("image", "caption"))
    assert e.value.where == f"{p}:2"
    assert "'caption'" in e.value.what


def test_read_jsonl_rejects_a_line_that_is_not_an_object(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError) as e:
        read_jsonl(p)
    assert e.value.where == f"{p}:2" and "list" in e.value.what


def test_read_jsonl_with_on_error_reports_every_bad_line_and_keeps_the_good_ones(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\nnot json\n{"b": 2}\n[3]\n{"a": 5}\n')
    errors = []
    rows = read_jsonl(p, required=("a",), on_error=errors.append)
    assert [r["_line"] for r in rows] == [1, 5]
    assert [e.where for e in errors] == [f"{p}:2", f"{p}:3", f"{p}:4"]


def test_readers_name_the_line_of_non_utf8_bytes(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("ok line\nsecond ok\ncaf\xe9 au lait\n".encode("latin-1"))
    for reader in (read_lines, read_jsonl, read_csv):
        with pytest.raises(DataError) as e:
            reader(p)
        assert e.value.where == f"{p}:3", reader.__name__
        assert "UTF-8" in e.value.what


def test_read_lines_names_an_empty_line_and_ignores_the_final_newline(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("one\r\ntwo\n")
    assert read_lines(p) == ["one", "two"]
    p.write_text("one\n   \nthree\n")
    with pytest.raises(DataError) as e:
        read_lines(p)
    assert e.value.where == f"{p}:2" and e.value.what == "empty line"
    assert read_lines(p, allow_empty=True) == ["one", "   ", "three"]


def test_read_lines_accepts_a_utf8_byte_order_mark(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes("\ufeff你好\n".encode())
    assert read_lines(p) == ["你好"]


def test_read_csv_names_missing_header_columns_and_bad_rows(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("image,text\na.png,hi\n")
    with pytest.raises(DataError) as e:
        read_csv(p, required=("image", "caption"))
    assert e.value.where == f"{p}:1" and "'caption'" in e.value.what

    p.write_text("image,caption\na.png,a red circle\nb.png,a,b\nc.png\n")
    with pytest.raises(DataError) as e:
        read_csv(p, required=("image", "caption"))
    assert e.value.where == f"{p}:3" and "more fields" in e.value.what
    errors = []
    rows = read_csv(p, required=("image", "caption"), on_error=errors.append)
    assert [(r["image"], r["_line"]) for r in rows] == [("a.png", 2)]
    assert [(e.where, "fewer" in e.what or "more" in e.what) for e in errors] == [
        (f"{p}:3", True),
        (f"{p}:4", True),
    ]


def test_read_csv_keeps_quoted_commas_and_line_numbers(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text('image,caption\na.png,"a red, round circle"\nb.png,x\n')
    rows = read_csv(p, required=("image", "caption"))
    assert [(r["caption"], r["_line"]) for r in rows] == [("a red, round circle", 2), ("x", 3)]


def test_read_json_names_line_and_column_of_a_syntax_error(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{\n  "a": 1,\n  "b": ]\n}\n')
    with pytest.raises(DataError) as e:
        read_json(p)
    assert e.value.where.startswith(f"{p}:3:")


def test_readers_report_missing_files_and_folders(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_json(tmp_path / "nope.json")
    with pytest.raises(DataError, match="folder"):
        read_lines(tmp_path)
    assert not os.listdir(tmp_path)
