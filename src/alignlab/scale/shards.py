"""Sharded input: plan the shards of one file or a folder of files, and read one shard's rows.

A *shard* is a contiguous range of rows of one source: a file (plain text, JSONL or Parquet) or a
generated range of row numbers (jobs whose rows are items of an in-memory data set, e.g. the images of a
retrieval set). The plan is made once on the driver; a worker reads only its shard.

Formats (by suffix, or forced with ``fmt``):

* ``text`` — one row per line, UTF-8, ``{"text": line}``; an empty line is an error naming the line;
* ``jsonl`` (``.jsonl``) — one JSON object per line (blank lines skipped); a bad line is an error;
* ``parquet`` (``.parquet``) — one row per table row (columns as fields), read with pyarrow.

Every row carries ``_line`` (its line in a text/JSONL file, its 1-based row in a Parquet file) and
``_row`` (its position in the whole plan, 0-based), so output rows can be put back in input order and
errors can name the shard and line.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "caps.txt").write_text("a bat\\na bank\\na crane\\n")
>>> plan = plan_files(d / "caps.txt", rows_per_shard=2)
>>> [(s.id, s.start, s.stop) for s in plan]
[('00000', 0, 2), ('00001', 2, 3)]
>>> [r["text"] for r in read_shard(plan[1])]
['a crane']
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignlab.core.errors import ConfigError, DataError, DependencyError

FORMATS = ("text", "jsonl", "parquet")
DEFAULT_ROWS_PER_SHARD = 10_000


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of ``source``; ``offset`` is the plan position of its first row."""

    id: str  # "00003": position in the plan, zero-padded (also names the output file)
    source: str  # file path, or a name for generated rows
    fmt: str  # text | jsonl | parquet | range
    start: int  # first row (0-based, counting rows, not blank lines) within the source
    stop: int
    offset: int  # global 0-based index of the first row over the whole plan
    byte_start: int = 0  # text/JSONL: byte offset of the first row's line, so a worker seeks, not scans
    line_start: int = 1  # text/JSONL: its 1-based line number

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Shard:
        return Shard(**d)

    def where(self, line: int | None = None) -> str:
        """``path:line (shard 00003)``: how errors name a row."""
        loc = self.source if line is None else f"{self.source}:{line}"
        return f"{loc}, shard {self.id}"


def format_of(path: Path, fmt: str | None = None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown input format {fmt!r}", fix=f"choose one of {', '.join(FORMATS)}")
        return fmt
    suffix = path.suffix.lower()
    return "jsonl" if suffix == ".jsonl" else "parquet" if suffix == ".parquet" else "text"


def input_files(path: str | os.PathLike) -> list[Path]:
    """The file itself, or the files of a folder in name order (hidden and ``_``-prefixed names skipped)."""
    path = Path(path)
    if not path.exists():
        raise DataError("input not found", where=str(path), fix="give a file or a folder of shard files")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
    if not files:
        raise DataError("the input folder holds no files", where=str(path), fix="put the input shards in it")
    return files


def _scan(path: Path, fmt: str, rows_per_shard: int) -> tuple[int, list[tuple[int, int]]]:
    """(rows, [(byte offset, line number) of rows 0, k, 2k, ...]) of a file (Parquet: no offsets)."""
    if fmt == "parquet":
        pq = _pyarrow_parquet()
        try:
            return pq.ParquetFile(path).metadata.num_rows, []
        except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
            raise DataError(
                f"not a readable Parquet file: {e}",
                where=str(path),
                fix="give a Parquet file written by pyarrow, pandas or Spark",
            ) from None
    rows, pos, starts = 0, 0, []
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            if fmt == "text" or line.strip():  # JSONL skips blank lines; in text they are rows (errors)
                if rows % rows_per_shard == 0:
                    starts.append((pos, line_no))
                rows += 1
            pos += len(line)
    return rows, starts


def plan_files(
    path: str | os.PathLike, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, fmt: str | None = None
) -> list[Shard]:
    """Shards of a file or of every file of a folder: each file is cut into ranges of ``rows_per_shard``."""
    if rows_per_shard < 1:
        raise ConfigError(f"rows per shard must be >= 1, got {rows_per_shard}")
    shards: list[Shard] = []
    offset = 0
    for f in input_files(path):
        kind = format_of(f, fmt)
        n, starts = _scan(f, kind, rows_per_shard)
        for k, start in enumerate(range(0, n, rows_per_shard)):
            stop = min(start + rows_per_shard, n)
            byte_start, line_start = starts[k] if starts else (0, 1)
            shards.append(
                Shard(f"{len(shards):05d}", str(f), kind, start, stop, offset + start, byte_start, line_start)
            )
        offset += n
    if not shards:
        raise DataError("the input holds no rows", where=str(path), fix="give a non-empty file")
    return shards


def plan_range(
    n_rows: int,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    source: str = "rows",
    first_id: int = 0,
    offset: int = 0,
) -> list[Shard]:
    """Shards of generated rows ``0 .. n_rows - 1`` (the rows are just their numbers)."""
    if rows_per_shard < 1:
        raise ConfigError(f"rows per shard must be >= 1, got {rows_per_shard}")
    return [
        Shard(f"{first_id + i:05d}", source, "range", s, min(s + rows_per_shard, n_rows), offset + s)
        for i, s in enumerate(range(0, n_rows, rows_per_shard))
    ]


def renumber(shards: list[Shard]) -> list[Shard]:
    """The same shards with ids ``00000 ..`` in list order (to join several plans into one)."""
    return [
        Shard(f"{i:05d}", s.source, s.fmt, s.start, s.stop, s.offset, s.byte_start, s.line_start)
        for i, s in enumerate(shards)
    ]


def _text_lines(shard: Shard) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of the shard's lines, decoded as UTF-8."""
    with open(shard.source, "rb") as f:
        f.seek(shard.byte_start)
        for i, raw in enumerate(itertools.islice(f, shard.rows), shard.line_start):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    "line is not valid UTF-8", where=shard.where(i), fix="re-encode the file as UTF-8"
                ) from None
            if i == 1:
                line = line.lstrip("\ufeff")
            yield i, line.rstrip("\n").rstrip("\r")


def _jsonl_lines(shard: Shard) -> Iterator[tuple[int, str]]:
    with open(shard.source, "rb") as f:
        f.seek(shard.byte_start)
        numbered = ((i, raw) for i, raw in enumerate(f, shard.line_start) if raw.strip())
        for i, raw in itertools.islice(numbered, shard.rows):
            try:
                yield i, raw.decode("utf-8-sig" if i == 1 else "utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    "line is not valid UTF-8", where=shard.where(i), fix="re-encode the file as UTF-8"
                ) from None


def read_shard(shard: Shard) -> list[dict[str, Any]]:
    """The rows of ``shard`` as dicts with ``_line`` and ``_row``; a malformed row is a :class:`DataError`
    that names the file, line and shard."""
    if shard.fmt == "range":
        return [
            {"_line": r + 1, "_row": shard.offset + k} for k, r in enumerate(range(shard.start, shard.stop))
        ]
    if not Path(shard.source).is_file():
        raise DataError("input shard file is missing", where=shard.where(), fix="restore the input file")
    rows: list[dict[str, Any]] = []
    if shard.fmt == "text":
        for k, (line_no, text) in enumerate(_text_lines(shard)):
            if not text.strip():
                raise DataError(
                    "empty line", where=shard.where(line_no), fix="remove the line or give its text"
                )
            rows.append({"text": text, "_line": line_no, "_row": shard.offset + k})
    elif shard.fmt == "jsonl":
        for k, (line_no, text) in enumerate(_jsonl_lines(shard)):
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"invalid JSON: {e.msg}",
                    where=shard.where(line_no),
                    fix="each line must be one JSON object",
                ) from None
            if not isinstance(rec, dict):
                raise DataError(
                    f"expected a JSON object, found {type(rec).__name__}",
                    where=shard.where(line_no),
                    fix="each line must be one JSON object",
                )
            rec["_line"], rec["_row"] = line_no, shard.offset + k
            rows.append(rec)
    elif shard.fmt == "parquet":
        pq = _pyarrow_parquet()
        table = pq.read_table(shard.source).slice(shard.start, shard.rows)
        for k, rec in enumerate(table.to_pylist()):
            rec["_line"], rec["_row"] = shard.start + k + 1, shard.offset + k
            rows.append(rec)
    else:
        raise ConfigError(f"unknown shard format {shard.fmt!r}")
    if len(rows) != shard.rows:
        raise DataError(
            f"shard has {len(rows)} rows, the plan expected {shard.rows}",
            where=shard.where(),
            fix="the input changed while the job ran; start again with a new output folder",
        )
    return rows


def text_of(row: dict[str, Any], shard: Shard, fields: tuple[str, ...] = ("text", "caption")) -> str:
    """The text of a row: ``text`` (or the first of ``fields`` present); missing or empty is an error."""
    for f in fields:
        if f in row:
            value = row[f]
            if not isinstance(value, str) or not value.strip():
                raise DataError(
                    f"field {f!r} must be a non-empty string",
                    where=shard.where(row["_line"]),
                    fix="give the text of every row",
                )
            return value
    raise DataError(
        f"row has none of the fields {', '.join(map(repr, fields))}",
        where=shard.where(row["_line"]),
        fix=f"name the text column {fields[0]!r}",
    )


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DependencyError(
            "pyarrow is not installed", where="Parquet shards", fix="pip install 'alignlab[scale]'"
        ) from None
    return pq
