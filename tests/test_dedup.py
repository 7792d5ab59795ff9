import polars as pl

from pipeline.config import DedupConfig
from pipeline.stage import StageContext
from pipeline.stages.dedup import match_key, run


def dedup(texts, **cfg):
    table = pl.DataFrame({"comment_id": [f"c{i}" for i in range(len(texts))], "text_norm": texts})
    return run(table, DedupConfig(**cfg), StageContext(seed=0, cache_dir=None, state_dir=None))


def test_match_key_drops_spacing_punctuation_and_case():
    assert match_key("点 赞 ! 家门口 ,ABC") == "点赞家门口abc"
    assert match_key("哈哈哈哈哈") == "哈哈"
    assert match_key("???") != match_key("!!!")


def test_one_character_edit_is_one_group_and_others_stay_apart():
    base = "前缘科技的发展探索不是靠以利益为目的的商人来做的,没有务实的一步一个脚印,注定失败的"
    texts = [base, base.replace("一步", "一比"), "今天天气很好,适合出去走走看看风景", "完全无关的一句话而已啊"]
    t = dedup(texts)
    g = t["dup_group"].to_list()
    assert g[0] == g[1] and len(set(g)) == 3
    assert t["dup_group_size"].to_list() == [2, 2, 1, 1]
    assert t["dup_rep_id"][0] == t["dup_rep_id"][1]


def test_group_ids_do_not_depend_on_input_order():
    texts = ["兼职日结在家动动手指月入过万加微信了解", "兼职日结在家动动手指月入过万加薇信了解", "别的内容完全不一样的评论"]
    a = dict(zip(texts, dedup(texts)["dup_group"]))
    b = dict(zip(texts[::-1], dedup(texts[::-1])["dup_group"]))
    assert a == b


def test_short_texts_need_exact_match():
    t = dedup(["最棒中国", "最棒中国人", "最棒中国!"])
    g = t["dup_group"].to_list()
    assert g[0] == g[2] and g[0] != g[1]


def test_groups_do_not_chain_past_the_representative():
    # Each neighbour pair is close, but the ends of the chain are not: they must not all be one group.
    chain = ["一二三四五六七八九十甲乙丙丁", "一二三四五六七八九十甲乙丙戊", "一二三四五六七八九十甲乙己戊",
             "一二三四五六七八九十甲庚己戊", "一二三四五六七八九十辛庚己戊", "一二三四五六七八九壬辛庚己戊"]
    t = dedup(chain, min_jaccard=0.7)
    assert t["dup_group"].n_unique() > 1
