"""The sharded engine without Ray: input formats, row order, manifest and resume, bad rows, a killed driver,
and the one-line errors of the Ray flags (missing extra, unreachable cluster)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignlab.cli import main
from alignlab.core.errors import ConfigError, DataError, DependencyError, ResumeError
from alignlab.scale import EngineOptions, load_manifest, plan_files, read_output, run_job
from alignlab.scale.engine import check_reachable, import_ray

from .jobs import LengthJob

HERE = Path(__file__).resolve().parent
LOCAL = EngineOptions(engine="local", quiet=True)


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.txt").write_text("one\ntwo\nthree\nfour\nfive\n")
    (d / "b.jsonl").write_text('{"text": "six"}\n\n{"text": "seven"}\n{"text": "eight"}\n{"text": "nine"}\n')
    pq.write_table(pa.table({"text": ["ten", "eleven", "twelve"]}), d / "c.parquet")
    (d / "_ignored.txt").write_text("not an input\n")
    return d


def test_text_jsonl_and_parquet_shards_come_back_in_input_order(tmp_path):
    shards = plan_files(_folder(tmp_path), rows_per_shard=2)
    assert [(Path(s.source).name, s.start, s.stop, s.offset) for s in shards] == [
        ("a.txt", 0, 2, 0),
        ("a.txt", 2, 4, 2),
        ("a.txt", 4, 5, 4),
        ("b.jsonl", 0, 2, 5),
        ("b.jsonl", 2, 4, 7),
        ("c.parquet", 0, 2, 9),
        ("c.parquet", 2, 3, 11),
    ]
    report = run_job(LengthJob(), shards, tmp_path / "out", LOCAL)
    assert (report.ran, report.skipped, report.rows, report.retries) == (7, 0, 12, 0)
    out = read_output(tmp_path / "out").to_pydict()
    words = [
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
    ]
    assert out["upper"] == [w.upper() for w in words]
    assert out["row"] == list(range(12))
    # JSONL line numbers count the blank line; Parquet rows are numbered from 1
    assert out["line"] == [1, 2, 3, 4, 5, 1, 3, 4, 5, 1, 2, 3]
    manifest = load_manifest(tmp_path / "out")
    assert manifest["complete"] and sorted(manifest["done"]) == [s.id for s in shards]
    assert not list((tmp_path / "out").glob("*.tmp"))  # atomic writes leave no temporary files


def test_a_malformed_row_names_shard_and_line_and_the_other_shards_are_kept(tmp_path):
    src = tmp_path / "rows.jsonl"
    lines = [json.dumps({"text": f"row {i}"}) for i in range(6)]
    lines[3] = '{"text": "broken'
    src.write_text("\n".join(lines) + "\n")
    shards = plan_files(src, rows_per_shard=2)
    with pytest.raises(DataError) as e:
        run_job(LengthJob(), shards, tmp_path / "out", LOCAL)
    assert f"{src}:4" in e.value.where and "shard 00001" in e.value.where
    assert "run the same command again" in e.value.fix
    manifest = load_manifest(tmp_path / "out")
    assert sorted(manifest["done"]) == ["00000", "00002"] and "00001" in manifest["failed"]
    assert not manifest["complete"]
    with pytest.raises(DataError, match="not finished"):
        read_output(tmp_path / "out")
    # fixed input: only the failed shard runs again
    lines[3] = json.dumps({"text": "row 3"})
    src.write_text("\n".join(lines) + "\n")
    before = (tmp_path / "out" / "part-00000.parquet").stat().st_mtime_ns
    report = run_job(LengthJob(), shards, tmp_path / "out", LOCAL)
    assert (report.ran, report.skipped) == (1, 2)
    assert (tmp_path / "out" / "part-00000.parquet").stat().st_mtime_ns == before
    assert read_output(tmp_path / "out").column("upper").to_pylist() == [f"ROW {i}" for i in range(6)]


def test_an_empty_text_line_is_an_error_naming_its_line(tmp_path):
    src = tmp_path / "caps.txt"
    src.write_text("a bat\na bank\n\na crane\n")
    with pytest.raises(DataError, match="empty line") as e:
        run_job(LengthJob(), plan_files(src, rows_per_shard=10), tmp_path / "out", LOCAL)
    assert e.value.where == f"{src}:3, shard 00000"


def test_a_folder_written_with_other_settings_or_input_is_not_resumed(tmp_path):
    src = tmp_path / "caps.txt"
    src.write_text("".join(f"caption {i}\n" for i in range(5)))
    run_job(LengthJob(), plan_files(src, rows_per_shard=2), tmp_path / "out", LOCAL)

    class Other(LengthJob):
        def identity(self):
            return {"kind": "other"}

    with pytest.raises(ResumeError, match="other settings"):
        run_job(Other(), plan_files(src, rows_per_shard=2), tmp_path / "out", LOCAL)
    with pytest.raises(ResumeError, match="another input or shard size"):
        run_job(LengthJob(), plan_files(src, rows_per_shard=3), tmp_path / "out", LOCAL)
    again = run_job(LengthJob(), plan_files(src, rows_per_shard=2), tmp_path / "out", LOCAL)
    assert (again.ran, again.skipped) == (0, 3)


DRIVER = """
import sys
sys.path.insert(0, {here!r})
from jobs import LengthJob
from alignlab.scale import EngineOptions, plan_files, run_job
run_job(LengthJob(sleep_s=0.4), plan_files({src!r}, rows_per_shard=2), {out!r},
        EngineOptions(engine="local", quiet=True))
"""


def test_a_killed_driver_resumes_and_skips_the_shards_that_were_done(tmp_path):
    src, out = tmp_path / "caps.txt", tmp_path / "out"
    src.write_text("".join(f"caption {i}\n" for i in range(16)))  # 8 shards of 2, 0.4 s each
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(here=str(HERE), src=str(src), out=str(out))])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            m = load_manifest(out) if (out / "manifest.json").is_file() else None
            if m and len(m["done"]) >= 2:
                break
            assert proc.poll() is None, "the driver ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the manifest (rewritten at most once a second) lists done shards; a part written after its last
    # rewrite is complete too (atomic rename) and is adopted on resume
    done = sorted(p.name[len("part-") : -len(".parquet")] for p in out.glob("part-*.parquet"))
    assert set(load_manifest(out)["done"]) <= set(done) and 2 <= len(done) < 8
    report = run_job(LengthJob(), plan_files(src, rows_per_shard=2), out, LOCAL)
    assert report.skipped == len(done) and report.ran == 8 - len(done)
    table = read_output(out).to_pydict()
    assert table["upper"] == [f"CAPTION {i}" for i in range(16)]
    pids = {table["row"][i] // 2: table["pid"][i] for i in range(16)}
    # the shards done before the kill were written by the killed driver and not run again
    assert {pids[int(s)] for s in done} == {proc.pid}
    assert all(pids[k] != proc.pid for k in range(8) if f"{k:05d}" not in done)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_cluster_is_one_line_and_exit_2_within_seconds(tmp_path, capsys):
    pytest.importorskip("ray")
    src = tmp_path / "caps.txt"
    src.write_text("a bat flew out\n")
    t0 = time.time()
    rc = main(
        [
            "ambiguity",
            "score",
            str(src),
            "--out",
            str(tmp_path / "s.jsonl"),
            "--method",
            "mfs",
            "--engine",
            "ray",
            "--ray-address",
            f"127.0.0.1:{_free_port()}",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and time.time() - t0 < 15
    assert err.startswith("error: cannot reach the Ray cluster at 127.0.0.1:") and err.count("\n") == 1
    assert "ray start --head" in err
    with pytest.raises(ConfigError, match="cannot read the Ray address"):
        check_reachable("no-port-here")


def test_without_ray_the_ray_engine_names_the_scale_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as when it is not installed
    with pytest.raises(DependencyError, match=r"alignlab\[scale\]"):
        import_ray()
    src = tmp_path / "caps.txt"
    src.write_text("a bat flew out\n")
    rc = main(
        [
            "ambiguity",
            "score",
            str(src),
            "--out",
            str(tmp_path / "s.jsonl"),
            "--method",
            "mfs",
            "--engine",
            "ray",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "scale" in err


def test_ray_flags_need_the_ray_engine():
    with pytest.raises(ConfigError, match="need --engine ray"):
        EngineOptions(engine="local", ray_cpus=2)
