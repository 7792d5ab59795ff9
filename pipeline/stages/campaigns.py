"""Campaigns: the same message pushed into many threads within hours (paid posting, 水军, floods).

The dedup stage already groups copies that survive evasion; this stage asks where and when each
group's copies appeared. Per group: copies, distinct threads and authors, first and last seen, and
the sliding window of `window_minutes` that holds the most distinct threads. The score
(README "Campaigns") is the product of three factors in [0, 1]:

- spread = 1 - exp(-(threads in the window - 1) / 2.5): replies inside one thread give 0;
  3 threads 0.55, 5 threads 0.80, 9 threads 0.96.
- length = (distinct characters of the group's key - min_distinct_chars) /
  (full_distinct_chars - min_distinct_chars), clipped: short slogans ("加油", "转发微博", "致敬") give 0.
- burst = min(1, 2 x the share of the group's copies inside its busiest 24 hours): a text that
  recurs organically over weeks gives little; a push over one or two nights gives 1.

Groups without thread information score 0 (one thread cannot be told from many); without times the
window is all copies and the burst factor 1. With a state directory the copies of repeated groups
are kept for `history_days`, so a campaign spanning nights is scored as one.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter

import polars as pl

from pipeline.config import CampaignConfig
from pipeline.stage import Stage, StageContext
from pipeline.text.match_key import is_fallback

HISTORY = "campaign_history"
HISTORY_SCHEMA = {
    "dup_group": pl.String,
    "comment_id": pl.String,
    "thread_id": pl.String,
    "user_id": pl.String,
    "created_at": pl.Datetime("us", "UTC"),
    "dedup_key": pl.String,
}
CAMPAIGN_SCHEMA = {
    "dup_group": pl.String,
    "campaign_score": pl.Float64,
    "representative_id": pl.String,
    "representative_text": pl.String,
    "copies": pl.Int64,
    "copies_this_batch": pl.Int64,
    "threads": pl.Int64,
    "authors": pl.Int64,
    "first_seen": pl.Datetime("us", "UTC"),
    "last_seen": pl.Datetime("us", "UTC"),
    "peak_copies": pl.Int64,
    "peak_threads": pl.Int64,
    "peak_start": pl.Datetime("us", "UTC"),
    "peak_end": pl.Datetime("us", "UTC"),
    "evidence": pl.String,
}
SPREAD_SCALE = 2.5  # threads: 1 - exp(-(t - 1) / 2.5)
BURST_DAY = dt.timedelta(hours=24)


def length_factor(key: str, cfg: CampaignConfig) -> float:
    if is_fallback(key):
        return 0.0  # emoji or punctuation only
    span = max(cfg.full_distinct_chars - cfg.min_distinct_chars, 1)
    return min(1.0, max(0.0, (len(set(key)) - cfg.min_distinct_chars) / span))


def spread_factor(threads: int) -> float:
    return 1 - math.exp(-(max(threads, 1) - 1) / SPREAD_SCALE)


def busiest_window(times: list[dt.datetime], threads: list[str | None], width: dt.timedelta) -> tuple[int, int, int, int]:
    """(start, end, copies, distinct threads) of the window of `width` holding the most distinct
    threads (then the most copies); `times` sorted ascending."""
    best = (0, 0, 0, 0)
    inside: Counter = Counter()
    left = 0
    for right, t in enumerate(times):
        if threads[right] is not None:
            inside[threads[right]] += 1
        while t - times[left] > width:
            th = threads[left]
            if th is not None:
                inside[th] -= 1
                if not inside[th]:
                    del inside[th]
            left += 1
        if (len(inside), right - left + 1) > (best[3], best[2]):
            best = (left, right, right - left + 1, len(inside))
    return best


def busiest_day_share(times: list[dt.datetime]) -> float:
    left, most = 0, 0
    for right, t in enumerate(times):
        while t - times[left] > BURST_DAY:
            left += 1
        most = max(most, right - left + 1)
    return most / len(times)


def _minutes(a: dt.datetime, b: dt.datetime) -> str:
    minutes = (b - a).total_seconds() / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def score_group(times: list, threads: list, users: list, key: str, cfg: CampaignConfig) -> dict:
    """The campaign facts and score of one group's copies (history and this batch): parallel lists,
    times ascending with unknown times (None) last."""
    n = len(times)
    n_timed = n - times.count(None)
    n_threads = len(set(threads) - {None})
    authors = len(set(users) - {None}) if any(u is not None for u in users) else None
    if n_timed:
        timed = times[:n_timed]
        start, end, peak_copies, peak_threads = busiest_window(timed, threads[:n_timed], dt.timedelta(minutes=cfg.window_minutes))
        peak_start, peak_end = timed[start], timed[end]
        burst = min(1.0, 2 * busiest_day_share(timed))
        peak_authors = len(set(users[start : end + 1]) - {None}) if authors is not None else None
        where = f"{peak_copies} copies in {peak_threads} threads within {_minutes(peak_start, peak_end)}"
    else:
        peak_copies, peak_threads, peak_start, peak_end, burst, peak_authors = n, n_threads, None, None, 1.0, authors
        where = f"{peak_copies} copies in {peak_threads} threads (times unknown)"
    score = length_factor(key, cfg) * spread_factor(peak_threads) * burst
    parts = [where]
    if peak_authors is not None:
        parts.append(f"by {peak_authors} authors")
    if n > peak_copies:
        parts.append(f"{n} copies in {n_threads} threads in all")
    if burst < 1:
        parts.append(f"spread over {_minutes(times[0], times[n_timed - 1])}")
    return {
        "campaign_score": round(score, 4),
        "copies": n,
        "threads": n_threads,
        "authors": authors,
        "first_seen": times[0] if n_timed else None,
        "last_seen": times[n_timed - 1] if n_timed else None,
        "peak_copies": peak_copies,
        "peak_threads": peak_threads,
        "peak_start": peak_start,
        "peak_end": peak_end,
        "evidence": ", ".join(parts),
    }


def score_groups(rows: pl.DataFrame, key_of: dict[str, str], cfg: CampaignConfig) -> pl.DataFrame:
    ordered = rows.sort(["dup_group", "created_at"], nulls_last=True)
    groups, times = ordered["dup_group"].to_list(), ordered["created_at"].to_list()
    threads, users = ordered["thread_id"].to_list(), ordered["user_id"].to_list()
    scored, start = [], 0
    for i in range(1, len(groups) + 1):
        if i == len(groups) or groups[i] != groups[start]:
            g = groups[start]
            scored.append({"dup_group": g, **score_group(times[start:i], threads[start:i], users[start:i], key_of[g], cfg)})
            start = i
    schema = {k: v for k, v in CAMPAIGN_SCHEMA.items() if k not in ("representative_id", "representative_text", "copies_this_batch")}
    return pl.DataFrame(scored, schema=schema)


def _history(table: pl.DataFrame, old: pl.DataFrame | None) -> pl.DataFrame:
    """Copies of this batch plus the kept copies of earlier batches; a comment seen again (a rerun
    of the same batch) counts once."""
    now = table.select(list(HISTORY_SCHEMA)).cast(HISTORY_SCHEMA)
    if old is None or not old.height:
        return now
    old = old.select(list(HISTORY_SCHEMA)).cast(HISTORY_SCHEMA).filter(~pl.col("comment_id").is_in(now["comment_id"].implode()))
    return pl.concat([old, now])


def _kept_history(rows: pl.DataFrame, cfg: CampaignConfig) -> pl.DataFrame:
    """What the next batch needs: timed copies of groups seen at least twice whose key can score,
    from the last `history_days`."""
    if cfg.history_days == 0 or rows["created_at"].null_count() == rows.height:
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    latest = rows["created_at"].max()
    kept = rows.filter(pl.col("created_at") >= latest - dt.timedelta(days=cfg.history_days))
    kept = kept.filter(pl.len().over("dup_group") > 1)
    keys = kept.group_by("dup_group").agg(pl.col("dedup_key").first())
    scoring = [g for g, k in keys.iter_rows() if length_factor(k, cfg) > 0]
    return kept.filter(pl.col("dup_group").is_in(scoring)).select(list(HISTORY_SCHEMA))


def run(table: pl.DataFrame, cfg: CampaignConfig, ctx: StageContext) -> pl.DataFrame:
    rows = _history(table, ctx.state.get(HISTORY))
    batch_groups = table["dup_group"].unique()
    # Only groups with copies in two threads can score; the rest are 0 without a look.
    candidates = (
        rows.filter(pl.col("dup_group").is_in(batch_groups.implode()))
        .group_by("dup_group")
        .agg(pl.col("thread_id").drop_nulls().n_unique().alias("n_threads"), pl.col("dedup_key").first())
        .filter(pl.col("n_threads") > 1)
    )
    candidates = candidates.filter(pl.col("dedup_key").map_elements(lambda k: length_factor(k, cfg) > 0, return_dtype=pl.Boolean))
    wanted = rows.filter(pl.col("dup_group").is_in(candidates["dup_group"].implode()))
    facts = score_groups(wanted, dict(candidates.select("dup_group", "dedup_key").iter_rows()), cfg)
    score_of = dict(facts.select("dup_group", "campaign_score").iter_rows())
    evidence_of = dict(facts.select("dup_group", "evidence").iter_rows())
    scores = table["dup_group"].replace_strict(score_of, default=0.0, return_dtype=pl.Float64)
    table = table.with_columns(
        scores.alias("campaign_score"),
        (scores >= cfg.threshold).alias("flag_campaign"),
        pl.when(scores >= cfg.report_floor)
        .then(pl.concat_list(pl.col("dup_group").replace_strict(evidence_of, default=None, return_dtype=pl.String)))
        .otherwise(pl.lit([], pl.List(pl.String)))
        .alias("evidence_campaign"),
    )
    ctx.side_tables["campaigns"] = _campaign_table(facts, table, cfg)
    ctx.side_tables[HISTORY] = _kept_history(rows, cfg)
    ctx.facts.update(
        candidate_groups=candidates.height,
        campaigns=int((facts["campaign_score"] >= cfg.threshold).sum()) if facts.height else 0,
        flagged=int(table["flag_campaign"].sum()),
        history_rows=ctx.side_tables[HISTORY].height,
        threads_known=int(table["thread_id"].is_not_null().sum()),
        times_known=int(table["created_at"].is_not_null().sum()),
    )
    return table


def _campaign_table(facts: pl.DataFrame, table: pl.DataFrame, cfg: CampaignConfig) -> pl.DataFrame:
    """One row per group at or above the report floor, highest score first."""
    listed = facts.filter(pl.col("campaign_score") >= cfg.report_floor)
    batch = (
        table.filter(pl.col("dup_group").is_in(listed["dup_group"].implode()))
        .group_by("dup_group")
        .agg(
            pl.col("dup_rep_id").first().alias("representative_id"),
            pl.col("text").sort_by(pl.col("comment_id") != pl.col("dup_rep_id")).first().alias("representative_text"),
            pl.len().cast(pl.Int64).alias("copies_this_batch"),
        )
    )
    out = listed.join(batch, on="dup_group", how="left").select(list(CAMPAIGN_SCHEMA)).cast(CAMPAIGN_SCHEMA)
    return out.sort(["campaign_score", "copies", "dup_group"], descending=[True, True, False])


STAGE: Stage[CampaignConfig] = Stage(
    name="campaigns",
    version="1",
    config_section="campaign",
    code_modules=("pipeline.text.match_key",),
    requires=("comment_id", "text", "dup_group", "dup_rep_id", "dedup_key", "thread_id", "created_at", "user_id"),
    state=(HISTORY,),
    adds=("campaign_score", "flag_campaign", "evidence_campaign"),
    run=run,
)
