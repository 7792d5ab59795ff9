"""Export: the tables a moderator and a script read, built from the labelled table.

- comments: every kept input row in input order, contract columns first, no embedding vectors.
- review queue: one row per duplicate group with any flag, highest priority first.
- topics: the topic table plus the share of its comments flagged per category.
The runner writes them (atomically); this module only builds tables.
"""

from __future__ import annotations

import polars as pl

from pipeline.config import ExportConfig
from pipeline.scoring.score import CATEGORIES, REVIEW_KINDS

CONTRACT = [
    "comment_id",
    "text",
    "text_norm",
    "dup_group",
    "dup_group_size",
    "topic_id",
    "topic_label",
    "score_abuse",
    "score_hate",
    "score_conspiracy",
    "flag_abuse",
    "flag_hate",
    "flag_conspiracy",
    "needs_review",
]
# The contract's columns stay as they were; later categories (spam) and the campaign flag follow.
EXTRA = [
    "review_priority",
    "flagged_categories",
    "evidence_abuse",
    "evidence_hate",
    "evidence_conspiracy",
    "score_spam",
    "flag_spam",
    "evidence_spam",
    "campaign_score",
    "flag_campaign",
    "evidence_campaign",
    "score_offence_model",
    "dup_rep_id",
    "dedup_key",
    "source_file",
    "source_row",
    "text_truncated",
    "id_note",
    "thread_id",
    "created_at",
    "user_id",
    "time_note",
    "decision",
    "decision_note",
    "decided_at",
]


def kinds_in(table: pl.DataFrame) -> list[tuple[str, str, str, str]]:
    """(name, score, flag, evidence) of each kind whose flag the table has."""
    return [(name, *cols) for name, cols in REVIEW_KINDS.items() if cols[1] in table.columns]


def priority_expr(kinds: list[tuple[str, str, str, str]]) -> pl.Expr:
    """Highest score among the categories that fired, raised by group size: a 50-copy campaign of
    score 0.8 (0.8 * (1 + 0.5 * log10 50) = 1.48) comes before a single comment of score 0.95."""
    fired = pl.max_horizontal([pl.when(pl.col(flag)).then(pl.col(score)).otherwise(0.0) for _, score, flag, _ in kinds])
    return (fired * (1 + 0.5 * pl.col("dup_group_size").cast(pl.Float64).log10())).round(4)


def comments_table(table: pl.DataFrame, decided: pl.DataFrame | None = None) -> pl.DataFrame:
    table = table.drop("embedding", strict=False)  # not exported; the join and sort below would copy it
    if decided is not None:
        # A decision on a group holds for every member, including comments that joined it later.
        table = table.join(decided, on="dup_group", how="left", maintain_order="left")
    kinds = kinds_in(table)
    fired = pl.concat_list(
        [pl.when(pl.col(flag)).then(pl.lit(name)).otherwise(pl.lit(None, pl.String)) for name, _, flag, _ in kinds]
    ).list.drop_nulls()
    # needs_review from the flag stage covers the content categories; a campaign flag adds to it.
    table = table.sort("input_index").with_columns(
        pl.any_horizontal(["needs_review", *[flag for _, _, flag, _ in kinds]]).alias("needs_review"),
        priority_expr(kinds).alias("review_priority"),
        fired.alias("flagged_categories"),
    )
    return table.select(CONTRACT + [c for c in EXTRA if c in table.columns])


def review_queue(comments: pl.DataFrame) -> pl.DataFrame:
    """One row per flagged duplicate group without a moderator's decision; members in input order."""
    open_groups = comments.filter(pl.col("needs_review"))
    if "decision" in comments.columns:
        open_groups = open_groups.filter(pl.col("decision").is_null())
    flagged = comments.filter(pl.col("dup_group").is_in(open_groups["dup_group"].implode()))
    kinds = kinds_in(comments)
    evidence = pl.concat_list(
        [
            pl.when(pl.col(flag)).then(pl.col(ev).list.eval(pl.lit(f"{name}: ") + pl.element())).otherwise(pl.lit([], pl.List(pl.String)))
            for name, _, flag, ev in kinds
        ]
    )
    queue = (
        flagged.with_columns(evidence.alias("_evidence"))
        .group_by("dup_group", maintain_order=True)
        .agg(
            pl.len().alias("dup_group_size"),
            pl.col("dup_rep_id").first().alias("representative_id"),
            pl.col("text").filter(pl.col("comment_id") == pl.col("dup_rep_id")).first().alias("representative_text"),
            pl.col("comment_id").alias("member_ids"),
            pl.col("review_priority").max(),
            pl.col("flagged_categories").list.explode(keep_nulls=False, empty_as_null=False).unique(maintain_order=True),
            *[pl.col(score).max() for _, score, _, _ in kinds],
            pl.col("_evidence").list.explode(keep_nulls=False, empty_as_null=False).unique(maintain_order=True).alias("evidence"),
            pl.col("topic_id").first(),
            pl.col("topic_label").first(),
        )
    )
    queue = queue.with_columns(pl.col("flagged_categories").list.sort())
    queue = queue.sort(["review_priority", "dup_group_size", "dup_group"], descending=[True, True, False])
    return queue.with_row_index("rank", offset=1)


def review_queue_csv(queue: pl.DataFrame) -> pl.DataFrame:
    """Lists become readable strings: spreadsheets have no list cells."""
    return queue.with_columns(
        pl.col("member_ids").list.join(" "),
        pl.col("flagged_categories").list.join(", "),
        pl.col("evidence").list.join("; "),
        *[pl.col(score).round(3) for score, _, _ in REVIEW_KINDS.values() if score in queue.columns],
    )


def topics_table(topics: pl.DataFrame, comments: pl.DataFrame) -> pl.DataFrame:
    shares = comments.group_by("topic_id").agg([pl.col(f"flag_{c}").mean().round(4).alias(f"share_flagged_{c}") for c in CATEGORIES])
    return topics.join(shares, on="topic_id", how="left").sort("topic_id")


def build(table: pl.DataFrame, topics: pl.DataFrame, cfg: ExportConfig, decided: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    comments = comments_table(table, decided)
    queue = review_queue(comments)
    return {
        "comments": comments,
        "review_queue": queue,
        "review_queue_csv": review_queue_csv(queue),
        "topics": topics_table(topics, comments),
    }
