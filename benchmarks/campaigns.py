"""The campaigns stage on a real comment stream, with campaigns planted in it.

    python benchmarks/campaigns.py --input ../shared/bench/weibo_ced_comments.parquet [--rows 50000]
        [--plant 20] [--top 20] [--seed 0] [--set campaign.window_minutes=60]

Reads the corpus with its thread and time columns, keeps whole threads (a seeded sample of them,
up to --rows comments; all rows by default), plants --plant campaigns: each a message written
for this benchmark, pushed 8-40 times with the dedup benchmark's evasions (one changed character,
traditional characters, spaces, emoji, punctuation, full-width, homophones) into 3-10 of the
stream's threads within two hours. Then runs ingest, dedup and campaigns as a run does.

Prints one JSON line: rows, seconds of the campaigns stage, the share of planted copies flagged,
the planted campaigns found (90% of their copies flagged), how many other groups are flagged, and
the stream's ten largest groups (their score and flag: popular slogans should not be campaigns).
--top N prints the N highest-scoring groups that were not planted to stderr, to read by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from dedup import KINDS, evade  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.io.readers import read_inputs  # noqa: E402
from pipeline.stage import StageContext  # noqa: E402
from pipeline.stages import campaigns, dedup, ingest  # noqa: E402

# Messages a paid or coordinated push might carry; written for this benchmark.
MESSAGES = [
    "这家公司的新品真的太好用了，大家赶紧去官网抢购吧，错过就没了",
    "强烈建议大家关注这个公众号，每天分享干货，我已经学到很多了",
    "某某市长为民办实事，老百姓都拍手叫好，这样的好官越多越好",
    "这个明星人品太差了，大家一起抵制他的新电影，不要让他再出现在荧幕上",
    "这件事的真相被隐瞒了，大家转发让更多人知道，不要让他们得逞",
    "支持国货，这个品牌的手机质量比进口的好多了，价格还便宜一半",
    "小区门口新开的健身房办卡打五折，环境好教练专业，推荐大家去试试",
    "这个游戏太好玩了，新人注册就送十连抽，快来一起玩吧",
    "专家说得太对了，房价还会继续涨，现在不买以后更买不起",
    "这家医院的专家号特别难挂，有需要的可以找我帮忙代挂",
    "某品牌奶粉出了问题还不召回，大家千万别给孩子买了，转给身边的宝妈",
    "新出的这款电动车续航真的长，一次充电能跑五百公里，性价比超高",
    "这部剧是今年最好看的国产剧，演员演技在线，剧情不拖沓，强烈推荐",
    "这个地方的风景太美了，五一假期一定要来打卡，住宿吃饭都很实惠",
    "我们村的土特产纯天然无添加，城里买不到，需要的朋友可以联系我",
    "这位老师讲课深入浅出，报他的网课一个月就提了三十分，家长们快看",
    "某外卖平台又在偷偷涨价了，大家一起卸载，换别的平台点",
    "这款理财产品收益稳定，比存银行强多了，我已经买了好几期了",
    "这家奶茶店的新品好喝到哭，排队两小时也值得，姐妹们冲",
    "球队这赛季的表现太差了，主教练必须下课，球迷们一起发声",
]


def whole_threads(table: pl.DataFrame, rows: int | None, seed: int) -> pl.DataFrame:
    if rows is None or rows >= table.height:
        return table
    sizes = table.group_by("raw_thread").len().sort("raw_thread").sample(fraction=1.0, shuffle=True, seed=seed)
    keep = sizes.filter(pl.col("len").cum_sum() <= rows)["raw_thread"]
    return table.filter(pl.col("raw_thread").is_in(keep.implode()))


def plant(table: pl.DataFrame, n: int, seed: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """Campaign copies appended to the raw table; returns it and {comment_id: campaign number}."""
    rng = random.Random(seed)
    threads = sorted(set(table["raw_thread"].drop_nulls().to_list()))
    base = dt.datetime(2012, 6, 1, tzinfo=dt.UTC)
    rows, which = [], {}
    for k in range(n):
        message = MESSAGES[k % len(MESSAGES)]
        chosen = rng.sample(threads, rng.randint(3, min(10, len(threads))))
        start = base + dt.timedelta(days=rng.randrange(300), minutes=rng.randrange(24 * 60))
        for i in range(rng.randint(8, 40)):
            text = message if i == 0 else evade(message, KINDS[i % len(KINDS)], rng)
            cid = f"planted-{k}-{i}"
            when = start + dt.timedelta(minutes=rng.uniform(0, 120))
            rows.append(("planted", i + 1, cid, text, None, chosen[i % len(chosen)], when.isoformat(), f"planter-{k}-{i % 5}"))
            which[cid] = k
    extra = pl.DataFrame(rows, schema=table.schema, orient="row")
    return pl.concat([table, extra]), which


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=None, help="keep whole threads up to this many comments (default: all)")
    parser.add_argument("--plant", type=int, default=20, help="campaigns to plant (0 = none)")
    parser.add_argument("--top", type=int, default=0, help="print the N highest-scoring unplanted groups to stderr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    cfg = load_config(None, args.overrides)
    ing = cfg.ingest
    raw = read_inputs([args.input], ing.id_column, ing.text_column, None, ing.context_columns)
    raw = whole_threads(raw, args.rows, args.seed)
    raw, planted = plant(raw, args.plant, args.seed) if args.plant else (raw, {})
    ctx = StageContext(seed=cfg.run.seed, cache_dir=None, state_dir=None, progress=False)
    table = ingest.run(raw, cfg.ingest, ctx)
    table = dedup.run(table, cfg.dedup, StageContext(seed=cfg.run.seed, cache_dir=None, state_dir=None, progress=False))
    ctx = StageContext(seed=cfg.run.seed, cache_dir=None, state_dir=None, progress=False)
    t0 = time.time()
    table = campaigns.run(table, cfg.campaign, ctx)
    seconds = time.time() - t0
    found = ctx.side_tables["campaigns"]
    is_planted = pl.col("comment_id").is_in(list(planted))
    planted_rows = table.filter(is_planted).with_columns(pl.col("comment_id").replace_strict(planted).alias("campaign"))
    per_campaign = planted_rows.group_by("campaign").agg(pl.col("flag_campaign").mean())
    planted_groups = set(planted_rows["dup_group"].to_list())
    other = table.filter(~is_planted & ~pl.col("dup_group").is_in(list(planted_groups)))
    largest = (
        other.group_by("dup_group")
        .agg(
            pl.col("text").first(),
            pl.len().alias("copies"),
            pl.col("thread_id").n_unique().alias("threads"),
            pl.col("campaign_score").first(),
            pl.col("flag_campaign").first(),
        )
        .sort(["copies", "dup_group"], descending=[True, False])
        .head(10)
    )
    result = {
        "input": str(args.input),
        "rows": table.height,
        "threads": table["thread_id"].n_unique(),
        "window_minutes": cfg.campaign.window_minutes,
        "threshold": cfg.campaign.threshold,
        "campaigns_stage_seconds": round(seconds, 2),
        "planted_campaigns": len(set(planted.values())),
        "planted_copies": len(planted),
        "planted_copies_flagged": round(planted_rows["flag_campaign"].mean(), 4) if planted else None,
        "planted_campaigns_found": int((per_campaign["flag_campaign"] >= 0.9).sum()) if planted else None,
        "other_groups_flagged": other.filter(pl.col("flag_campaign"))["dup_group"].n_unique(),
        "other_comments_flagged": int(other["flag_campaign"].sum()),
        "other_groups_listed": found.filter(~pl.col("dup_group").is_in(list(planted_groups))).height,
        "largest_groups": [
            {
                "text": r["text"][:30],
                "copies": r["copies"],
                "threads": r["threads"],
                "score": r["campaign_score"],
                "flag": r["flag_campaign"],
            }
            for r in largest.iter_rows(named=True)
        ],
    }
    if args.top:
        top = found.filter(~pl.col("dup_group").is_in(list(planted_groups))).head(args.top)
        for i, r in enumerate(top.iter_rows(named=True), 1):
            text = r["representative_text"].replace("\n", " ")[:70]
            print(f"{i:>2}. {r['campaign_score']:.2f} {r['dup_group']} {text!r} | {r['evidence']}", file=sys.stderr)
    print(json.dumps(result, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
