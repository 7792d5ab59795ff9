"""Read input files into one raw table; the ingest stage validates and normalises it.

Every input row becomes exactly one raw row, readable or not: a row that cannot be parsed keeps
its file and line number and a `read_error`, so the ingest stage can quarantine it instead of
losing it. Only a file that cannot be opened at all stops the run (`InputFileError`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

SUPPORTED = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".txt": "txt"}
RAW_SCHEMA = {
    "source_file": pl.String,
    "source_row": pl.Int64,
    "raw_id": pl.String,
    "raw_text": pl.String,
    "read_error": pl.String,
    # Optional context columns (ingest.thread_column, time_column, user_column), as read: the ingest
    # stage parses the time. Null where the file has no such column.
    "raw_thread": pl.String,
    "raw_time": pl.String,
    "raw_user": pl.String,
}
CONTEXT = ("raw_thread", "raw_time", "raw_user")


class InputFileError(Exception):
    """An input file that cannot be read at all; the message names the file and what to do."""


def read_inputs(
    paths: list[Path],
    id_column: str,
    text_column: str,
    thread_comments_start: int | None = None,
    context_columns: tuple[str | None, str | None, str | None] = (None, None, None),
) -> pl.DataFrame:
    """`context_columns`: the input columns of the thread, the time and the author (None = not read)."""
    frames = [read_one(p, id_column, text_column, thread_comments_start, context_columns) for p in paths]
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=RAW_SCHEMA)


def check_file(path: Path) -> str:
    """The file's kind, or InputFileError saying what is wrong with it and what to do."""
    if not path.exists():
        raise InputFileError(f"{path}: input file not found; check the --input path")
    if not path.is_file():
        raise InputFileError(f"{path}: not a file; give --input one file per comment batch")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"{path}: not readable by this user; check its permissions")
    kind = SUPPORTED.get(path.suffix.lower())
    if kind is None:
        raise InputFileError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .csv, .tsv, .parquet or .txt")
    return kind


def read_one(
    path: Path,
    id_column: str,
    text_column: str,
    thread_comments_start: int | None,
    context_columns: tuple[str | None, str | None, str | None] = (None, None, None),
) -> pl.DataFrame:
    kind = check_file(path)
    try:
        if kind == "parquet":
            rows = list(_parquet_rows(path, id_column, text_column, context_columns))
        else:
            data = path.read_bytes()
            if kind == "jsonl":
                rows = list(_jsonl_rows(data, id_column, text_column, context_columns))
            elif kind in ("csv", "tsv"):
                rows = list(_csv_rows(path, data, id_column, text_column, "\t" if kind == "tsv" else ",", context_columns))
            else:
                # A thread file is one thread: its name is the thread.
                rows = [(n, i, t, err, (path.stem, None, None)) for n, i, t, err in _thread_rows(data, thread_comments_start)]
    except OSError as e:
        raise InputFileError(f"{path}: cannot read ({e.strerror or e}); check permissions") from None
    return pl.DataFrame([(str(path), n, i, t, err, *ctx) for n, i, t, err, ctx in rows], schema=RAW_SCHEMA, orient="row")


NO_CONTEXT = (None, None, None)


def _as_context(value: Any) -> str | None:
    """A thread, time or author value as text (times are parsed by the ingest stage)."""
    if value is None or isinstance(value, (dict, list, bool)) or value != value:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    text = str(value).strip()
    return text or None


def _as_text(value: Any) -> tuple[str | None, str | None]:
    """(text, error). Numbers become their decimal text: comments like "666" or 1 are real comments."""
    if value is None:
        return None, "missing or null text"
    if isinstance(value, bool):
        return None, f"text is a boolean ({value}), not a string"
    if isinstance(value, (int, float)):
        return (str(value), None) if value == value else (None, "text is NaN")
    if isinstance(value, str):
        return value, None
    return None, f"text is a {type(value).__name__}, not a string"


def _as_id(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)) or value != value:
        return None
    return str(value)


def _decode(line: bytes) -> tuple[str | None, str | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start}"


def _jsonl_rows(data: bytes, id_column: str, text_column: str, context_columns=NO_CONTEXT) -> Iterator[tuple]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the file's final newline ends the last line; it does not start a new one
    for n, line in enumerate(lines, 1):
        if not line.strip():
            # Quarantined rather than skipped, so every line of the file is accounted for.
            yield n, None, None, "blank line: no JSON object", NO_CONTEXT
            continue
        decoded, err = _decode(line.rstrip(b"\r"))
        if err:
            yield n, None, None, err, NO_CONTEXT
            continue
        try:
            obj = json.loads(decoded)
        except json.JSONDecodeError as e:
            yield n, None, None, f"invalid JSON ({e.msg} at column {e.colno})", NO_CONTEXT
            continue
        if not isinstance(obj, dict):
            yield n, None, None, f"line is a JSON {type(obj).__name__}, not an object", NO_CONTEXT
            continue
        text, err = _as_text(obj.get(text_column))
        if err and text_column not in obj:
            err = f"no {text_column!r} field"
        yield n, _as_id(obj.get(id_column)), text, err, tuple(_as_context(obj.get(c)) if c else None for c in context_columns)


def _csv_rows(path: Path, data: bytes, id_column: str, text_column: str, delimiter: str, context_columns=NO_CONTEXT) -> Iterator[tuple]:
    # surrogateescape keeps undecodable bytes visible so each bad row is quarantined, not the file.
    content = data.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    if text_column not in header:
        raise InputFileError(
            f"{path}: no {text_column!r} column (columns: {', '.join(header)}); "
            f"set ingest.text_column, e.g. --set ingest.text_column={header[-1]}"
        )
    ti, ii = header.index(text_column), header.index(id_column) if id_column in header else None
    ci = [header.index(c) if c and c in header else None for c in context_columns]
    for record in reader:
        n = reader.line_num  # line where this record ends: what a spreadsheet user can find
        if not record:
            yield n, None, None, "blank line: no fields", NO_CONTEXT
            continue
        if len(record) != len(header):
            yield n, None, None, f"{len(record)} fields, the header has {len(header)}", NO_CONTEXT
            continue
        bad = next((f for f in record if _has_surrogates(f)), None)
        if bad is not None:
            yield n, None, None, "invalid UTF-8", NO_CONTEXT
            continue
        context = tuple(_as_context(record[i]) if i is not None else None for i in ci)
        yield n, (record[ii] or None) if ii is not None else None, record[ti], None, context


def _has_surrogates(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def _parquet_rows(path: Path, id_column: str, text_column: str, context_columns=NO_CONTEXT) -> Iterator[tuple]:
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as e:  # polars raises several error types for a corrupt file
        raise InputFileError(f"{path}: not a readable parquet file ({type(e).__name__}); re-export it") from None
    if text_column not in schema:
        raise InputFileError(f"{path}: no {text_column!r} column (columns: {', '.join(schema)}); set ingest.text_column")
    present = [c for c in dict.fromkeys([text_column, id_column, *context_columns]) if c and c in schema]
    table = pl.read_parquet(path, columns=present)
    none = [None] * table.height
    ids = table[id_column].to_list() if id_column in schema else none
    context = [[_as_context(v) for v in table[c].to_list()] if c and c in schema else none for c in context_columns]
    for n, (value, cid, *ctx) in enumerate(zip(table[text_column].to_list(), ids, *context), 1):
        text, err = _as_text(value)
        yield n, _as_id(cid), text, err, tuple(ctx)


# A thread .txt is an article followed by comments, one per line. The article's last lines are its
# apparatus: images ("![](...)"), a byline ("文/编辑:..."), a sources header ("参考资料:") and the
# citations under it ("澎湃新闻:2023-11-26《...》"). Comments start after the last such line.
SEPARATOR = re.compile(r"^\s*(-{3,}|={3,}|\*{3,}|#+\s*(评论|comments)\b.*|(全部)?评论(区)?\s*[:：]?)\s*$", re.I)
IMAGE = re.compile(r"^\s*!\[[^\]]*\]\([^)]*\)\s*$")
BYLINE = re.compile(r"^\s*(文|作者|编辑|来源|责编|撰文|图|文/编辑)\s*[/:：]")
SOURCES_HEADER = re.compile(r"^\s*(参考资料|参考文献|资料来源|参考|来源)\s*[:：]\s*$")
CITATION = re.compile(r"《[^》]+》|https?://|\d{4}-\d{1,2}-\d{1,2}")


def thread_comment_start(lines: list[str]) -> int:
    """0-based index of the first comment line in a thread (rule documented in the README)."""
    for i in range(len(lines) - 1, -1, -1):
        if SEPARATOR.match(lines[i]):
            return i + 1
    last = -1
    for i, line in enumerate(lines):
        if IMAGE.match(line) or BYLINE.match(line):
            last = i
        elif SOURCES_HEADER.match(line):
            last = i
            j = i + 1
            while j < len(lines) and CITATION.search(lines[j]):
                last = j
                j += 1
    return last + 1


def _thread_rows(data: bytes, comments_start: int | None) -> Iterator[tuple]:
    raw_lines = data.split(b"\n")
    decoded = [_decode(line.rstrip(b"\r")) for line in raw_lines]
    texts = [t if t is not None else "" for t, _ in decoded]
    start = comments_start - 1 if comments_start else thread_comment_start(texts)
    for i in range(start, len(raw_lines)):
        text, err = decoded[i]
        if err is None and not text.strip():
            continue
        yield i + 1, None, text, err
