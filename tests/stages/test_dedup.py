"""The dedup stage on near-duplicates written for this project: evasions, drift, batches."""

import polars as pl

from pipeline.config import DedupConfig
from pipeline.stage import StageContext
from pipeline.stages.dedup import INDEX, run
from pipeline.text.normalize import normalize_text

BASE = "这家店的服务态度真的太差了,等了一个小时才上菜,再也不会来了"
CAMPAIGN = "兼职日结,在家动动手指月入过万,加微信了解详情"
EVASIVE = [
    BASE,
    BASE.replace("来", "去"),  # one character changed
    "這家店的服務態度真的太差了,等了一個小時才上菜,再也不會來了",  # traditional
    " ".join(BASE),  # spaces between characters
    BASE.replace("服务", "服🙂务").replace("小时", "小时!!!"),  # emoji and punctuation
    CAMPAIGN,
    CAMPAIGN.replace("微信", "V信"),
    CAMPAIGN.replace("微信", "薇信"),
    CAMPAIGN.replace("微信", "ＶＸ"),
    CAMPAIGN.replace("在家", "在\u200b家"),
    CAMPAIGN.replace("微信", "卫信"),  # a homophone no table lists
]
UNRELATED = [
    "这家店的菜很好吃,服务也热情,下次还会再来",
    "地铁三号线终于开通了,上班方便多了",
    "兼职要小心,很多都是骗局,千万别交押金",
    "最棒中国",
    "最棒中国人",
    "😀😀",
    "😡",
]


def dedup(texts, state=None, ids=None, **cfg):
    table = pl.DataFrame(
        {"comment_id": ids or [f"c{i}" for i in range(len(texts))], "text_norm": [normalize_text(t) for t in texts]}
    ).with_row_index("input_index")
    ctx = StageContext(seed=0, cache_dir=None, state_dir=None)
    if state is not None:
        ctx.state[INDEX] = state
    out = run(table, DedupConfig(**cfg), ctx)
    return out, ctx.side_tables[INDEX]


def partition(table: pl.DataFrame) -> set[frozenset[str]]:
    return {frozenset(g) for g in table.group_by("dup_group").agg("comment_id")["comment_id"].to_list()}


def test_evasive_copies_group_and_unrelated_stay_apart():
    t, _ = dedup(EVASIVE + UNRELATED)
    g = t["dup_group"].to_list()
    assert len(set(g[:5])) == 1, "the restaurant complaint and its evasive copies"
    assert len(set(g[5:11])) == 1, "the ad campaign and its evasive copies"
    assert g[0] != g[5]
    assert len(set(g[11:])) == len(UNRELATED) and not set(g[11:]) & set(g[:11])
    assert t["dup_group_size"].to_list()[:11] == [5] * 5 + [6] * 6


def test_representative_is_a_member_and_one_row_stands_for_each_group():
    t, _ = dedup(EVASIVE + UNRELATED)
    for group in t.group_by("dup_group").agg("comment_id", "dup_rep_id", "is_dup_rep").iter_rows(named=True):
        assert group["dup_rep_id"][0] in group["comment_id"]
        assert sum(group["is_dup_rep"]) == 1


def test_group_ids_do_not_depend_on_input_order():
    texts = EVASIVE + UNRELATED
    a, _ = dedup(texts)
    b, _ = dedup(texts[::-1], ids=[f"c{i}" for i in range(len(texts))][::-1])
    assert dict(zip(a["comment_id"], a["dup_group"])) == dict(zip(b["comment_id"], b["dup_group"]))


def test_groups_do_not_chain_past_the_representative():
    # Neighbours in this chain are similar; its ends are not and must not share a group.
    chain = [
        "一二三四五六七八九十甲乙丙丁",
        "一二三四五六七八九十甲乙丙戊",
        "一二三四五六七八九十甲乙己戊",
        "一二三四五六七八九十甲庚己戊",
        "一二三四五六七八九十辛庚己戊",
        "一二三四五六七八九壬辛庚己戊",
    ]
    t, _ = dedup(chain)
    g = t["dup_group"].to_list()
    assert g[0] != g[-1]
    for group in partition(t):
        assert len(group) <= 3


def test_short_texts_need_an_exact_match():
    t, _ = dedup(["最棒中国", "最棒中国人", "最棒中国!", "加油", "加油!!!"])
    g = t["dup_group"].to_list()
    assert g[0] == g[2] and g[0] != g[1] and g[3] == g[4]


def test_two_batches_sharing_state_give_the_groups_of_one_run():
    texts = EVASIVE + UNRELATED + [CAMPAIGN.replace("日结", "日洁"), BASE + "!"]
    ids = [f"c{i}" for i in range(len(texts))]
    whole, _ = dedup(texts, ids=ids)
    order = [0, 5, 10, 3, 12, 7, 14, 1, 16, 9, 11, 2, 13, 4, 15, 6, 8, 17, 18, 19]  # interleaved halves
    first, second = order[: len(order) // 2], order[len(order) // 2 :]
    one, state = dedup([texts[i] for i in first], ids=[ids[i] for i in first])
    two, state = dedup([texts[i] for i in second], state=state, ids=[ids[i] for i in second])
    both = pl.concat([one, two])
    assert partition(both) == partition(whole)
    # A campaign that spans batches keeps the id it got on its first day.
    day_one = dict(zip(one["comment_id"], one["dup_group"]))
    assert {g for cid, g in zip(two["comment_id"], two["dup_group"]) if cid in ("c6", "c7", "c8")} <= set(day_one.values())
    assert state.height == len({*one["dedup_key"], *two["dedup_key"]})


def test_rerunning_a_batch_against_its_own_state_changes_nothing():
    t1, state = dedup(EVASIVE + UNRELATED)
    t2, state2 = dedup(EVASIVE + UNRELATED, state=state)
    assert t1["dup_group"].to_list() == t2["dup_group"].to_list()
    assert t1["dup_rep_id"].to_list() == t2["dup_rep_id"].to_list()
    assert state2.height == state.height
