"""The campaigns stage on streams written for this project: a campaign with evasions spread over
threads within an hour, against slogans, replies inside one thread and texts that recur over weeks."""

import datetime as dt

import polars as pl
import pytest

from pipeline.config import PROJECT_ROOT, CampaignConfig, DedupConfig
from pipeline.stage import StageContext
from pipeline.stages import campaigns, dedup
from pipeline.stages.ingest import parse_time
from pipeline.text.normalize import normalize_text

FAST = PROJECT_ROOT / "configs" / "fast.yaml"
START = dt.datetime(2024, 5, 1, 20, 0, tzinfo=dt.UTC)
PUSHED = "这家公司的新品真的太好用了，大家赶紧去官网抢购吧，错过就没了"
EVASIONS = [
    PUSHED,
    PUSHED.replace("真的", "真滴"),
    " ".join(PUSHED),
    PUSHED.replace("官网", "官🙂网") + "!!!",
    "這家公司的新品真的太好用了，大家趕緊去官網搶購吧，錯過就沒了",
]
OTHERS = ["今天的比赛踢得真精彩", "这个价格有点贵了吧", "地铁又延误了，上班迟到", "支持一下作者，写得很用心", "我家楼下也开了一家这样的店"]
REPLY = "楼上说得对，我也是这么想的，支持一下"
ORGANIC = "人生就像一盒巧克力，你永远不知道下一颗是什么味道"


def stream(extra: list[tuple] = ()) -> list[tuple]:
    """(comment_id, text, thread, minutes after START, user)."""
    rows = [(f"c{i}", EVASIONS[i % len(EVASIONS)], f"t{i % 7}", i * 3, f"u{i}") for i in range(20)]  # 7 threads in an hour
    rows += [(f"s{i}", s, f"t{i % 9}", i * 2, f"v{i}") for i in range(40) for s in ["加油", "转发微博"][i % 2 :][:1]]
    rows += [(f"r{i}", REPLY, "t1", i, f"w{i}") for i in range(15)]  # replies inside one thread
    rows += [(f"o{i}", ORGANIC, f"t{i}", i * 4 * 24 * 60, f"x{i}") for i in range(8)]  # once every four days
    rows += [(f"p{i}", t, f"t{i % 5}", i, f"y{i}") for i, t in enumerate(OTHERS)]
    return rows + list(extra)


def table_of(rows: list[tuple]) -> pl.DataFrame:
    t = pl.DataFrame(
        {
            "comment_id": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "text_norm": [normalize_text(r[1]) for r in rows],
            "thread_id": [r[2] for r in rows],
            "created_at": [None if r[3] is None else START + dt.timedelta(minutes=r[3]) for r in rows],
            "user_id": [r[4] for r in rows],
        },
        schema_overrides={"created_at": pl.Datetime("us", "UTC"), "thread_id": pl.String, "user_id": pl.String},
    ).with_row_index("input_index")
    return dedup.run(t, DedupConfig(), StageContext(seed=0, cache_dir=None, state_dir=None))


def run(rows, history=None, **cfg):
    ctx = StageContext(seed=0, cache_dir=None, state_dir=None, state={} if history is None else {campaigns.HISTORY: history})
    out = campaigns.run(table_of(rows), CampaignConfig(**cfg), ctx)
    return out, ctx


def by_prefix(out: pl.DataFrame, prefix: str) -> pl.DataFrame:
    return out.filter(pl.col("comment_id").str.starts_with(prefix))


def test_a_campaign_with_evasions_is_flagged_on_every_copy_and_slogans_replies_and_organic_repeats_are_not():
    out, ctx = run(stream())
    pushed = by_prefix(out, "c")
    assert pushed["dup_group"].n_unique() == 1  # the evasions are one group (the dedup stage)
    assert pushed["flag_campaign"].all()
    assert pushed["campaign_score"].min() >= 0.8
    for prefix in ("s", "r", "o", "p"):
        assert not by_prefix(out, prefix)["flag_campaign"].any(), prefix
        assert by_prefix(out, prefix)["campaign_score"].max() < 0.2, prefix
    table = ctx.side_tables["campaigns"]
    assert table.height == 1
    row = table.row(0, named=True)
    assert (row["copies"], row["threads"], row["authors"], row["peak_threads"]) == (20, 7, 20, 7)
    assert row["evidence"].startswith("20 copies in 7 threads within 57 min")
    assert row["first_seen"] == START and row["last_seen"] == START + dt.timedelta(minutes=57)
    assert pushed["evidence_campaign"].to_list()[0] == [row["evidence"]]


def test_the_same_copies_spread_over_days_score_low_and_a_short_window_sees_fewer_threads():
    slow = [(f"c{i}", EVASIONS[i % 5], f"t{i % 7}", i * 24 * 60, f"u{i}") for i in range(20)]  # one a day
    out, _ = run(slow)
    assert out["campaign_score"].max() < 0.2
    out, _ = run(stream(), window_minutes=10)
    assert 0 < by_prefix(out, "c")["campaign_score"].max() < 0.8


def test_without_threads_nothing_scores_and_without_times_the_window_is_every_copy():
    no_threads = [(r[0], r[1], None, r[3], r[4]) for r in stream()]
    out, _ = run(no_threads)
    assert out["campaign_score"].max() == 0
    no_times = [(r[0], r[1], r[2], None, r[4]) for r in stream()]
    out, ctx = run(no_times)
    assert by_prefix(out, "c")["flag_campaign"].all()
    assert "times unknown" in ctx.side_tables["campaigns"]["evidence"][0]
    assert ctx.side_tables[campaigns.HISTORY].height == 0  # nothing to place in time


def test_history_joins_a_campaign_across_batches_and_a_rerun_counts_each_comment_once():
    first = [(f"c{i}", EVASIONS[i % 5], f"t{i}", i * 5, f"u{i}") for i in range(2)]
    out1, ctx1 = run(first)
    assert not out1["flag_campaign"].any()  # two threads: too little on its own
    history = ctx1.side_tables[campaigns.HISTORY]
    assert history.height == 2
    second = [(f"c{i}", EVASIONS[i % 5], f"t{i}", i * 5, f"u{i}") for i in range(2, 6)]
    out2, ctx2 = run(second, history)
    assert out2["flag_campaign"].all()
    assert ctx2.side_tables["campaigns"]["copies"][0] == 6
    assert ctx2.side_tables["campaigns"]["copies_this_batch"][0] == 4
    again, ctx3 = run(second, ctx2.side_tables[campaigns.HISTORY])
    assert ctx3.side_tables["campaigns"]["copies"][0] == 6
    assert again["campaign_score"].to_list() == out2["campaign_score"].to_list()


def test_history_forgets_copies_older_than_history_days():
    old = [(f"c{i}", EVASIONS[i % 5], f"t{i}", i, f"u{i}") for i in range(4)]
    _, ctx = run(old)
    late = [(f"d{i}", EVASIONS[i % 5], f"t{i}", 30 * 24 * 60 + i, f"u{i}") for i in range(2)]
    _, ctx2 = run(late, ctx.side_tables[campaigns.HISTORY], history_days=14)
    assert set(ctx2.side_tables[campaigns.HISTORY]["comment_id"]) == {"d0", "d1"}


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("2024-05-01 20:15", dt.datetime(2024, 5, 1, 20, 15, tzinfo=dt.UTC)),
        ("2024-05-01T20:15:30+08:00", dt.datetime(2024, 5, 1, 12, 15, 30, tzinfo=dt.UTC)),
        ("2024-05-01T20:15:30Z", dt.datetime(2024, 5, 1, 20, 15, 30, tzinfo=dt.UTC)),
        ("2024-05-01", dt.datetime(2024, 5, 1, tzinfo=dt.UTC)),
        ("1714594530", dt.datetime(2024, 5, 1, 20, 15, 30, tzinfo=dt.UTC)),
        ("1714594530000", dt.datetime(2024, 5, 1, 20, 15, 30, tzinfo=dt.UTC)),
        ("昨天 20:15", None),
        ("2024-13-01", None),
        ("", None),
    ],
)
def test_times_are_read_as_iso_8601_or_epoch_seconds(raw, expected):
    assert parse_time(raw) == expected


def test_a_run_keeps_a_comment_with_an_unreadable_time_and_writes_campaigns(tmp_path):
    from conftest import run_pipeline, write_jsonl

    rows = [
        {"comment_id": r[0], "text": r[1], "thread_id": r[2], "created_at": f"2024-05-01 20:{r[3] % 60:02d}", "user_id": r[4]}
        for r in stream()[:20]
    ]
    rows.append({"comment_id": "bad", "text": "时间写坏了的评论", "thread_id": "t1", "created_at": "昨天晚上"})
    out = tmp_path / "run"
    manifest = run_pipeline([write_jsonl(tmp_path / "in.jsonl", rows)], out, config=FAST)
    comments = pl.read_parquet(out / "comments.parquet")
    assert comments.height == 21 and manifest["summary"]["quarantined"] == 0
    bad = comments.filter(pl.col("comment_id") == "bad").row(0, named=True)
    assert bad["created_at"] is None and "昨天晚上" in bad["time_note"]
    assert comments.filter(pl.col("comment_id") != "bad")["flag_campaign"].all()
    assert comments.filter(pl.col("flag_campaign"))["needs_review"].all()
    queue = pl.read_parquet(out / "review" / "queue.parquet")
    assert "campaign" in queue["flagged_categories"][0] and queue["dup_group_size"][0] == 20
    assert pl.read_parquet(out / "campaigns.parquet")["copies"].to_list() == [20]
    assert manifest["summary"]["flagged"]["campaign"] == 20


def test_with_a_state_directory_a_campaign_over_two_nights_is_seen_as_one(tmp_path):
    from conftest import run_pipeline, write_jsonl

    def night(ids, minutes):
        return [
            {"comment_id": f"c{i}", "text": EVASIONS[i % len(EVASIONS)], "thread_id": f"t{i}", "created_at": f"2024-05-01 23:{m:02d}"}
            for i, m in zip(ids, minutes)
        ]

    state = tmp_path / "state"
    first = run_pipeline(
        [write_jsonl(tmp_path / "n1.jsonl", night(range(3), [40, 45, 50]))], tmp_path / "n1", f"run.state_dir={state}", config=FAST
    )
    assert first["summary"]["flagged"]["campaign"] == 0  # three copies in three threads: volume too low alone
    assert (state / f"{campaigns.HISTORY}.parquet").exists()
    rows = [r | {"created_at": f"2024-05-02 00:{m:02d}"} for r, m in zip(night(range(3, 8), range(5)), [0, 5, 10, 15, 20])]
    run_pipeline([write_jsonl(tmp_path / "n2.jsonl", rows)], tmp_path / "n2", f"run.state_dir={state}", config=FAST)
    table = pl.read_parquet(tmp_path / "n2" / "campaigns.parquet")
    assert table["copies"].to_list() == [8] and table["copies_this_batch"].to_list() == [5] and table["threads"].to_list() == [8]
    assert pl.read_parquet(tmp_path / "n2" / "comments.parquet")["flag_campaign"].all()
