"""Moderators' decisions on duplicate groups: read, merged with earlier ones, applied to a run.

A decision names a duplicate group (`dup_group`, as in comments.parquet and the review page) or a
comment (`comment_id`, mapped to its group), and says `approve`, `remove` or `escalate`, with an
optional `note` and `decided_at`. It applies to every member of the group, in this batch and in
later ones whose comments join the group (the state directory keeps both the groups and the
decisions). The latest decision on a group wins. Decided groups leave the review queue.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl

from pipeline.io.readers import InputFileError

DECISIONS = ("approve", "remove", "escalate")
SCHEMA = {"dup_group": pl.String, "decision": pl.String, "decision_note": pl.String, "decided_at": pl.String}
STATE_NAME = "decisions"


def read_file(path: Path, comments: pl.DataFrame | None = None) -> pl.DataFrame:
    """A decisions CSV or JSON (a list of objects, or JSON lines) -> SCHEMA rows.
    Rows naming only a comment_id are mapped to that comment's group through `comments`."""
    if not path.exists():
        raise InputFileError(f"{path}: decisions file not found; check the --decisions path")
    try:
        if path.suffix.lower() == ".csv":
            rows = pl.read_csv(path, infer_schema_length=0).to_dicts()
        elif path.suffix.lower() in (".json", ".jsonl"):
            text = path.read_text(encoding="utf-8-sig").strip()
            rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            raise InputFileError(f"{path}: decisions must be .csv, .json or .jsonl (as exported from review/index.html)")
    except (json.JSONDecodeError, pl.exceptions.PolarsError, UnicodeDecodeError) as e:
        raise InputFileError(f"{path}: cannot read decisions ({e}); export them again from the review page") from None
    group_of = {} if comments is None else dict(zip(comments["comment_id"].to_list(), comments["dup_group"].to_list()))
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out = []
    for n, row in enumerate(rows, 2 if path.suffix.lower() == ".csv" else 1):
        if not isinstance(row, dict):
            raise InputFileError(f"{path}: row {n} is not an object with dup_group and decision")
        decision = str(row.get("decision") or "").strip().lower()
        if decision not in DECISIONS:
            raise InputFileError(f"{path}: row {n}: decision {row.get('decision')!r} is not one of {', '.join(DECISIONS)}")
        group = row.get("dup_group") or group_of.get(str(row.get("comment_id") or ""))
        if not group:
            raise InputFileError(f"{path}: row {n}: no dup_group, and comment_id {row.get('comment_id')!r} is not in this run")
        out.append(
            {
                "dup_group": str(group),
                "decision": decision,
                "decision_note": (row.get("note") or row.get("decision_note") or None),
                "decided_at": str(row.get("decided_at") or now),
            }
        )
    return pl.DataFrame(out, schema=SCHEMA)


def merge(*tables: pl.DataFrame | None) -> pl.DataFrame:
    """All decisions, the latest per group (ISO timestamps sort as text; later files win ties)."""
    parts = [t.select(list(SCHEMA)).cast(SCHEMA) for t in tables if t is not None and t.height]
    if not parts:
        return pl.DataFrame(schema=SCHEMA)
    both = pl.concat(parts).with_row_index("_order")
    return both.sort(["decided_at", "_order"]).group_by("dup_group", maintain_order=True).last().sort("dup_group").drop("_order")
