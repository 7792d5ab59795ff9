"""Campaigns: the same message pushed into many threads within hours (paid posting, 水军, floods).

The dedup stage already groups copies that survive evasion; this stage asks where and when each
group's copies appeared. Per group: copies, distinct threads and authors, first and last seen, and
the sliding window of `window_minutes` that holds the most distinct threads. The score
(README "Campaigns") is the product of three factors in [0, 1]:

- spread = 1 - exp(-(threads in the window - 1) / 2): replies inside one thread give 0;
  3 threads 0.63, 4 threads 0.78, 6 threads 0.92.
- volume = 1 - exp(-(copies in the window - 2) / 3): two copies give 0, 5 copies 0.63, 8 copies 0.86,
  12 copies 0.96: a headline three people reposted is not a push.
- length = (distinct characters of the group's text once hashtags, links, @mentions, emoticon tags
  and the platform's own repost words (转发微博, 话题详情, 分享图片) are taken out - min_distinct_chars) /
  (full_distinct_chars - min_distinct_chars), clipped: short slogans ("加油", "转发微博", "致敬") and
  the reposts a platform writes itself ("#话题# 转发微博 话题详情:http") give 0.
- burst = min(1, 2 x the share of the group's copies inside its busiest 24 hours): a text that
  recurs organically over weeks gives little; a push over one or two nights gives 1.

Groups without thread information score 0 (one thread cannot be told from many); without times the
window is all copies and the burst factor 1. With a state directory the copies of repeated groups
are kept for `history_days`, so a campaign spanning nights is scored as one.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter

import polars as pl

from pipeline.config import CampaignConfig
from pipeline.stage import Stage, StageContext
from pipeline.text.match_key import is_fallback, match_key, sound_key

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
    "variant_groups": pl.List(pl.String),
}
BATCH_COLUMNS = ("representative_id", "representative_text", "copies_this_batch", "variant_groups")
SPREAD_SCALE = 2.0  # threads: 1 - exp(-(t - 1) / 2)
VOLUME_SCALE = 3.0  # copies: 1 - exp(-(c - 2) / 3)
# What a platform or a client writes by itself around a repost, and markup: not the message.
NOT_MESSAGE = re.compile(
    r"#[^#]{1,40}#|https?://\S*|www\.\S+|@[\w\-]{1,30}|\[[^\[\]\s]{1,8}\]|转发微博|轉發微博|话题详情|話題詳情|分享图片|分享圖片|网页链接|網頁鏈接|秒拍视频|回复|來自|来自"
)
BURST_DAY = dt.timedelta(hours=24)


def length_factor(key: str, cfg: CampaignConfig) -> float:
    """From a matching key (or message_key's result): 0 for short slogans, 1 for sentences."""
    if not key or is_fallback(key):
        return 0.0  # emoji or punctuation only
    span = max(cfg.full_distinct_chars - cfg.min_distinct_chars, 1)
    return min(1.0, max(0.0, (len(set(key)) - cfg.min_distinct_chars) / span))


def message_key(text_norm: str) -> str:
    """The matching key of what a comment says once markup and repost boilerplate are out."""
    stripped = NOT_MESSAGE.sub(" ", text_norm)
    return match_key(stripped) if stripped.strip() else ""


def spread_factor(threads: int) -> float:
    return 1 - math.exp(-(max(threads, 1) - 1) / SPREAD_SCALE)


def volume_factor(copies: int) -> float:
    return max(0.0, 1 - math.exp(-(copies - 2) / VOLUME_SCALE))


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
    score = length_factor(key, cfg) * spread_factor(peak_threads) * volume_factor(peak_copies) * burst
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
    """Campaign facts of each unit in `rows` (a unit: one duplicate group, or variant groups)."""
    ordered = rows.sort(["unit", "created_at"], nulls_last=True)
    units, times = ordered["unit"].to_list(), ordered["created_at"].to_list()
    threads, users = ordered["thread_id"].to_list(), ordered["user_id"].to_list()
    scored, start = [], 0
    for i in range(1, len(units) + 1):
        if i == len(units) or units[i] != units[start]:
            u = units[start]
            scored.append({"unit": u, **score_group(times[start:i], threads[start:i], users[start:i], key_of[u], cfg)})
            start = i
    schema = {"unit": pl.String} | {k: v for k, v in CAMPAIGN_SCHEMA.items() if k not in ("dup_group", *BATCH_COLUMNS)}
    return pl.DataFrame(scored, schema=schema)


# Evaded copies that the dedup stage keeps apart ("这家的" / "這家滴", "我" / "偶") mostly differ in
# particles, pronouns and function words, written as other characters. A group's skeleton is its
# key as it sounds without those sounds; groups with one skeleton (of at least SKELETON_MIN
# characters) are scored as one campaign: its variants.
SKELETON_DROP = frozenset(sound_key(c) for c in "的地得滴了啦啊呀吧呢吗嘛么哦哈是事在再有也就都和这那个一我偶你妳他她它们不很")
SKELETON_MIN = 8


def skeleton(key: str) -> str:
    return "".join(c for c in sound_key(key) if c not in SKELETON_DROP)


def units_of(pairs: pl.DataFrame) -> dict[str, str]:
    """dup_group -> campaign unit, from the (dup_group, dedup_key) pairs of the copies: groups that
    share a skeleton of SKELETON_MIN+ characters are one unit (union-find), named after the
    smallest group id in it; every other group is its own unit."""
    parent: dict[str, str] = {}

    def root(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    first_of: dict[str, str] = {}
    for group, key in pairs.sort(["dup_group", "dedup_key"]).iter_rows():
        if is_fallback(key):
            continue
        skel = skeleton(key)
        if len(skel) < SKELETON_MIN:
            continue
        other = first_of.setdefault(skel, group)
        a, b = root(group), root(other)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {g: root(g) for g in pairs["dup_group"].unique().to_list()}


def _history(table: pl.DataFrame, old: pl.DataFrame | None) -> pl.DataFrame:
    """Copies of this batch plus the kept copies of earlier batches; a comment seen again (a rerun
    of the same batch) counts once."""
    now = table.select(list(HISTORY_SCHEMA)).cast(HISTORY_SCHEMA)
    if old is None or not old.height:
        return now
    old = old.select(list(HISTORY_SCHEMA)).cast(HISTORY_SCHEMA).filter(~pl.col("comment_id").is_in(now["comment_id"].implode()))
    return pl.concat([old, now])


def _kept_history(rows: pl.DataFrame, cfg: CampaignConfig) -> pl.DataFrame:
    """What the next batch needs: timed copies of campaign units seen at least twice whose key can score,
    from the last `history_days`."""
    if cfg.history_days == 0 or rows["created_at"].null_count() == rows.height:
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    latest = rows["created_at"].max()
    kept = rows.filter(pl.col("created_at") >= latest - dt.timedelta(days=cfg.history_days))
    kept = kept.filter(pl.len().over("unit") > 1)
    keys = kept.group_by("unit").agg(pl.col("dedup_key").first())
    scoring = [u for u, k in keys.iter_rows() if length_factor(k, cfg) > 0]
    return kept.filter(pl.col("unit").is_in(scoring)).select(list(HISTORY_SCHEMA))


def run(table: pl.DataFrame, cfg: CampaignConfig, ctx: StageContext) -> pl.DataFrame:
    rows = _history(table, ctx.state.get(HISTORY))
    units = units_of(rows.select("dup_group", "dedup_key").unique())
    rows = rows.with_columns(pl.col("dup_group").replace_strict(units, return_dtype=pl.String).alias("unit"))
    table = table.with_columns(pl.col("dup_group").replace_strict(units, return_dtype=pl.String).alias("_unit"))
    # Only units with 3+ copies in 2+ threads can score; the rest are 0 without a look.
    candidates = (
        rows.filter(pl.col("unit").is_in(table["_unit"].unique().implode()))
        .group_by("unit")
        .agg(pl.col("thread_id").drop_nulls().n_unique().alias("n_threads"), pl.len().alias("n"))
        .filter((pl.col("n_threads") > 1) & (pl.col("n") > 2))
    )
    # The unit's message: the text of its first copy in this batch, markup taken out.
    first_text = (
        table.select("_unit", "text_norm").filter(pl.col("_unit").is_in(candidates["unit"].implode())).unique("_unit", keep="first")
    )
    message = {u: message_key(t) for u, t in first_text.iter_rows()}
    key_of = {u: m for u, m in message.items() if length_factor(m, cfg) > 0}
    facts = score_groups(rows.filter(pl.col("unit").is_in(list(key_of))), key_of, cfg)
    variants = rows.group_by("unit").agg(pl.col("dup_group").unique().sort().alias("variant_groups"))
    facts = facts.join(variants, on="unit", how="left").with_columns(
        pl.when(pl.col("variant_groups").list.len() > 1)
        .then(pl.format("{}, {} variant groups", "evidence", pl.col("variant_groups").list.len()))
        .otherwise("evidence")
        .alias("evidence")
    )
    score_of = dict(facts.select("unit", "campaign_score").iter_rows())
    evidence_of = dict(facts.select("unit", "evidence").iter_rows())
    scores = table["_unit"].replace_strict(score_of, default=0.0, return_dtype=pl.Float64)
    table = table.with_columns(
        scores.alias("campaign_score"),
        (scores >= cfg.threshold).alias("flag_campaign"),
        pl.when(scores >= cfg.report_floor)
        .then(pl.concat_list(pl.col("_unit").replace_strict(evidence_of, default=None, return_dtype=pl.String)))
        .otherwise(pl.lit([], pl.List(pl.String)))
        .alias("evidence_campaign"),
    )
    ctx.side_tables["campaigns"] = _campaign_table(facts, table, cfg)
    ctx.side_tables[HISTORY] = _kept_history(rows, cfg)
    ctx.facts.update(
        candidate_units=candidates.height,
        campaigns=int((facts["campaign_score"] >= cfg.threshold).sum()) if facts.height else 0,
        flagged=int(table["flag_campaign"].sum()),
        history_rows=ctx.side_tables[HISTORY].height,
        threads_known=int(table["thread_id"].is_not_null().sum()),
        times_known=int(table["created_at"].is_not_null().sum()),
    )
    return table.drop("_unit")


def _campaign_table(facts: pl.DataFrame, table: pl.DataFrame, cfg: CampaignConfig) -> pl.DataFrame:
    """One row per campaign at or above the report floor, highest score first; its dup_group is
    the variant group with the most copies in this batch."""
    listed = facts.filter(pl.col("campaign_score") >= cfg.report_floor)
    in_batch = table.select("_unit", "dup_group", "dup_rep_id", "comment_id", "text").filter(
        pl.col("_unit").is_in(listed["unit"].implode())
    )
    biggest = (
        in_batch.group_by("_unit", "dup_group")
        .agg(
            pl.len().alias("_n"),
            pl.col("dup_rep_id").first().alias("representative_id"),
            pl.col("text").sort_by(pl.col("comment_id") != pl.col("dup_rep_id")).first().alias("representative_text"),
        )
        .sort(["_n", "dup_group"], descending=[True, False])
        .unique("_unit", keep="first")
    )
    counts = in_batch.group_by("_unit").agg(pl.len().cast(pl.Int64).alias("copies_this_batch"))
    out = (
        listed.join(biggest.rename({"_unit": "unit"}), on="unit", how="left")
        .join(counts.rename({"_unit": "unit"}), on="unit", how="left")
        .select(list(CAMPAIGN_SCHEMA))
        .cast(CAMPAIGN_SCHEMA)
    )
    return out.sort(["campaign_score", "copies", "dup_group"], descending=[True, True, False])


STAGE: Stage[CampaignConfig] = Stage(
    name="campaigns",
    version="1",
    config_section="campaign",
    code_modules=("pipeline.text.match_key",),
    requires=("comment_id", "text", "text_norm", "dup_group", "dup_rep_id", "dedup_key", "thread_id", "created_at", "user_id"),
    state=(HISTORY,),
    adds=("campaign_score", "flag_campaign", "evidence_campaign"),
    run=run,
)
