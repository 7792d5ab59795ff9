"""`python -m pipeline sample-flags RUN_DIR`: a seeded random sample of what a run flagged.

Precision on your own stream is the number that counts, and nobody can know it without reading
flags. This draws, per category, up to N flagged duplicate groups at random (one line per group:
its representative text, size, score and the evidence), so that a person can mark each right or
wrong; `--out FILE.csv` writes the same sample with an empty `verdict` column to fill in.
Reads the run's comments.parquet only (the output contract), so any finished run works.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from pipeline.io.readers import InputFileError
from pipeline.scoring.score import REVIEW_KINDS as COLUMNS

CATEGORIES = tuple(COLUMNS)


def flagged_groups(comments: pl.DataFrame, category: str) -> pl.DataFrame:
    """One row per duplicate group flagged in `category`: its first member stands for it."""
    score, flag, evidence = COLUMNS[category]
    flagged = comments.filter(pl.col(flag))
    return (
        flagged.group_by("dup_group", maintain_order=True)
        .agg(
            pl.col("comment_id").first(),
            pl.col("text").first(),
            pl.len().alias("flagged_copies"),
            pl.col(score).max().alias("score"),
            pl.col(evidence).first().alias("evidence"),
        )
        .sort("dup_group")
    )


def sample(run_dir: Path, per_category: int, seed: int, categories: tuple[str, ...] | None = None) -> pl.DataFrame:
    """`categories`: None = every category the run has (runs made before spam and campaigns lack them)."""
    path = run_dir / "comments.parquet"
    if not path.is_file():
        raise InputFileError(f"{path}: not found; give the output directory of a finished `python -m pipeline run`")
    comments = pl.read_parquet(path)
    if categories is None:
        categories = tuple(c for c in CATEGORIES if COLUMNS[c][1] in comments.columns)
    missing = [col for cat in categories for col in COLUMNS[cat][:2] if col not in comments.columns]
    if missing:
        raise InputFileError(f"{path}: no column {missing[0]!r}; is this a comments table of this pipeline?")
    comments = comments.with_columns(
        [pl.lit([], pl.List(pl.String)).alias(COLUMNS[c][2]) for c in categories if COLUMNS[c][2] not in comments.columns]
    )
    frames = []
    for cat in categories:
        groups = flagged_groups(comments, cat)
        picked = groups.sample(min(per_category, groups.height), seed=seed, shuffle=True) if groups.height else groups
        frames.append(
            picked.with_columns(
                pl.lit(cat).alias("category"),
                pl.lit(groups.height).alias("groups_flagged"),
                pl.lit(comments.height).alias("comments_in_run"),
                pl.lit("").alias("verdict"),
            )
        )
    cols = [
        "category",
        "dup_group",
        "comment_id",
        "flagged_copies",
        "score",
        "text",
        "evidence",
        "groups_flagged",
        "comments_in_run",
        "verdict",
    ]
    return pl.concat([f.select(cols) for f in frames])


def format_sample(table: pl.DataFrame) -> str:
    lines = []
    for cat in table["category"].unique(maintain_order=True).to_list():
        part = table.filter(pl.col("category") == cat)
        n_groups, n_comments = part["groups_flagged"][0], part["comments_in_run"][0]
        lines.append(f"== {cat}: {part.height} of {n_groups} flagged groups ({n_comments} comments in the run)")
        for i, r in enumerate(part.iter_rows(named=True), 1):
            text = r["text"].replace("\n", " ")
            lines.append(f"{i:>3}. [{r['score']:.2f}] x{r['flagged_copies']} {text[:120]}")
            lines.append(f"      evidence: {'; '.join(r['evidence'] or []) or '(none)'}")
    return "\n".join(lines)


def main(run_dir: Path, per_category: int, seed: int, out: Path | None, categories: list[str] | None) -> int:
    table = sample(run_dir, per_category, seed, tuple(categories) if categories else None)
    print(format_sample(table))
    if out is not None:
        tmp = out.with_name(f".{out.name}.tmp")
        table.with_columns(pl.col("evidence").list.join(" | ")).write_csv(tmp)
        tmp.replace(out)
        print(f"sample written to {out}: fill in `verdict` (right / wrong) to measure precision", file=sys.stderr)
    return 0
