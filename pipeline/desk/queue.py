"""What the desk shows: a finished run's flagged duplicate groups, filtered and paged on the server
(a 100,000-comment run's queue is never sent to the browser whole).

The groups are those of review/queue.parquet plus the ones already decided (the run's queue omits
those; the desk lists them under "decided"), built from comments.parquet with the same function,
so the desk and review/index.html show the same entries, evidence and ranks.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.scoring.score import REVIEW_KINDS
from pipeline.stages.export import review_queue

MEMBER_COLUMNS = ["comment_id", "text", "topic_id", "topic_label", "needs_review"]


class RunQueue:
    def __init__(self, run_dir: Path):
        path = run_dir / "comments.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{path}: not a finished run; run `python -m pipeline run --output {run_dir}` first")
        comments = pl.read_parquet(path)
        self.run_dir = run_dir
        self.comments = comments.drop([c for c in ("decision", "decision_note", "decided_at") if c in comments.columns])
        queue = review_queue(self.comments)
        self.queue = queue.with_columns(
            (
                pl.col("representative_text").str.to_lowercase()
                + "\n"
                + pl.col("evidence").list.join("\n").str.to_lowercase()
                + "\n"
                + pl.col("dup_group").str.to_lowercase()
            ).alias("_haystack")
        )
        self.groups = set(self.comments["dup_group"].unique().to_list())
        self.topics = (
            self.queue.group_by("topic_id").agg(pl.col("topic_label").first(), pl.len().alias("groups")).sort("topic_id").to_dicts()
        )

    def select(
        self, decided_groups: set[str], category: str = "", topic: int | None = None, search: str = "", decided: str = "no"
    ) -> pl.DataFrame:
        """The queue rows a filter shows, in queue order. decided: "no" (default), "yes" or "all"."""
        q = self.queue
        if category:
            q = q.filter(pl.col("flagged_categories").list.contains(category))
        if topic is not None:
            q = q.filter(pl.col("topic_id") == topic)
        if search.strip():
            q = q.filter(pl.col("_haystack").str.contains(search.strip().lower(), literal=True))
        if decided != "all":
            is_decided = pl.col("dup_group").is_in(pl.Series(sorted(decided_groups), dtype=pl.String).implode())
            q = q.filter(is_decided if decided == "yes" else ~is_decided)
        return q

    def members(self, dup_group: str, limit: int = 200) -> list[dict]:
        rows = self.comments.filter(pl.col("dup_group") == dup_group)
        cols = MEMBER_COLUMNS + [c for kind in REVIEW_KINDS.values() for c in kind]
        return rows.select([c for c in cols if c in rows.columns]).head(limit).to_dicts()


def record(row: dict) -> dict:
    """One queue row as the API returns it (the review page's fields, plus the list of members)."""
    return {
        "rank": row["rank"],
        "dup_group": row["dup_group"],
        "size": row["dup_group_size"],
        "priority": row["review_priority"],
        "text": row["representative_text"],
        "representative_id": row["representative_id"],
        "member_ids": row["member_ids"][:50],
        "more_members": max(0, len(row["member_ids"]) - 50),
        "categories": row["flagged_categories"],
        "scores": {c: round(row[score], 3) for c, (score, _, _) in REVIEW_KINDS.items() if score in row},
        "evidence": row["evidence"],
        "topic_id": row["topic_id"],
        "topic_label": row["topic_label"],
    }
