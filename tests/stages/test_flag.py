"""The flag stage on texts written here, with the shipped models (no ../shared data needed)."""

import polars as pl
import pytest

from conftest import stage_context
from pipeline.config import PROJECT_ROOT, EmbedConfig, FlagConfig
from pipeline.scoring.rules import load_lexicon, load_rules, rule_matches
from pipeline.stages import embed
from pipeline.stages.flag import run
from pipeline.text.match_key import match_key
from pipeline.text.normalize import normalize_text


def flag(texts, **cfg):
    table = pl.DataFrame({"text_norm": [normalize_text(t) for t in texts]})
    ctx = stage_context()
    table = embed.run(table, EmbedConfig(), ctx)
    return run(table, FlagConfig(**cfg), ctx), ctx


def test_scores_flags_and_evidence():
    t, ctx = flag(
        [
            "你就是个傻逼,滚",
            "今天地铁开通了,通勤方便多了",
            "背后肯定有境外势力操控,都是为了洗钱",
            "外地人都是小偷,滚出我们城市",
            "他因为洗钱被法院判了刑",
        ]
    )
    for c in ("abuse", "hate", "conspiracy"):
        assert t[f"score_{c}"].is_between(0, 1).all()
    assert t["flag_abuse"].to_list()[:2] == [True, False]
    assert any("傻逼" in e for e in t["evidence_abuse"][0])
    assert t["flag_conspiracy"].to_list() == [False, False, True, False, False]
    assert any(e.startswith("rule ") for e in t["evidence_conspiracy"][2])
    assert t["flag_hate"].to_list() == [False, False, False, True, False]  # insult aimed at a group
    assert any("外地人" in e for e in t["evidence_hate"][3])
    assert t["needs_review"].to_list() == [a or h or c for a, h, c in zip(t["flag_abuse"], t["flag_hate"], t["flag_conspiracy"])]
    assert ctx.facts["flagged"]["abuse"] == int(t["flag_abuse"].sum())


def test_spacing_and_punctuation_do_not_hide_an_insult():
    t, _ = flag(["你 就 是 个 傻 逼", "你,就是,个傻.逼"])
    assert t["flag_abuse"].all()


def test_punctuation_only_is_not_judged_by_the_model():
    t, _ = flag(["？？？", "。。。。。。", "666"])
    assert t["score_offence_model"].to_list() == [0.0, 0.0, 0.0]
    assert not t["needs_review"].any()


def test_thresholds_come_from_config():
    text = ["背后肯定有境外势力操控,都是为了洗钱"]
    strict, _ = flag(text, threshold_conspiracy=1.0)
    loose, _ = flag(text, threshold_conspiracy=0.1)
    assert not strict["flag_conspiracy"][0] and loose["flag_conspiracy"][0]
    assert strict["score_conspiracy"][0] == pytest.approx(loose["score_conspiracy"][0])


def test_a_lower_base_rate_lowers_model_scores():
    text = ["这些人真恶心,都应该滚出去"]
    low, _ = flag(text, offence_base_rate=0.02)
    high, _ = flag(text, offence_base_rate=0.5)
    assert low["score_offence_model"][0] < high["score_offence_model"][0]


def test_homophone_spellings_do_not_hide_an_insult_or_a_slur_but_ordinary_words_stay_clean():
    t, _ = flag(["你就是个傻币", "黑桂都滚出去", "他出生在北京,白吃白喝", "这张纸张很薄"])
    assert t["flag_abuse"][0] and any("傻币" in e for e in t["evidence_abuse"][0])
    assert t["flag_hate"][1] and any("黑桂" in e for e in t["evidence_hate"][1])
    assert not t["needs_review"][2] and not t["needs_review"][3]


def test_threats_and_pinyin_initials_are_abuse_and_a_curse_on_a_named_group_is_hate():
    t, _ = flag(["有种别跑,下次见你一次打一次", "wcnm,谁把我车划了", "日本人都该死", "今天的比赛很精彩"])
    assert t["flag_abuse"][0] and t["flag_abuse"][1]
    assert t["flag_hate"][2] and any("日本人" in e for e in t["evidence_hate"][2])
    assert not t["needs_review"][3]


def test_objecting_to_regional_slurs_is_not_itself_hate():
    # "地域黑" names the behaviour; comments that use it mostly object to it.
    t, _ = flag(["地域黑真的很无聊,哪里都有好人和坏人", "新闻哪写河南了?地域黑能不能消停点"])
    assert not t["flag_hate"].any()


def _slur_matches(text):
    slurs = load_lexicon(PROJECT_ROOT / "models" / "lexicons" / "slurs.txt", match_by_sound=True)
    return [term for term, _ in slurs.matches(match_key(normalize_text(text)))]


def test_a_sound_match_across_two_words_is_not_a_dodge():
    assert _slur_matches("关税最后还不是他们自己老百姓买单") == []  # 自己|老百姓: "ji lao" like 基佬
    assert _slur_matches("韩国人要是真这么打架") == []  # 国人|要: "ren yao" like 人妖
    assert _slur_matches("股市明天绿油油了") == []
    assert any("鸡佬" in term for term in _slur_matches("一群死鸡佬"))  # the dodge itself still counts
    assert any("黑桂" in term for term in _slur_matches("黑桂都滚出去"))


def test_a_lexicon_term_that_folds_to_one_character_is_refused(tmp_path):
    lexicon = tmp_path / "slurs.txt"
    lexicon.write_text("# a comment\n绿绿\t0.7\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"slurs.txt:2: '绿绿' matches as '绿'"):
        load_lexicon(lexicon)


def test_a_weight_zero_phrase_hides_the_term_inside_it_where_it_occurs():
    assert _slur_matches("希望别一棒子打死所有加盟商") == []  # the idiom, not the slur
    assert _slur_matches("玉米棒子又涨价了") == []
    assert [t for t in _slur_matches("这帮高丽棒子") if "棒子" in t]
    # Only where the phrase stands: the slur elsewhere in the same comment still counts.
    assert [t for t in _slur_matches("韩国棒子也不能一棒子打死") if t.startswith("棒子")]


def test_calling_the_subject_a_fraud_is_abuse_but_asking_reporting_or_warning_is_not():
    # No insult word in any of them: models/rules/abuse.yaml (fraud_accusation) reads what is asserted.
    # At the rule's own weight (0.6): the default threshold_abuse (0.85, chosen on real comments)
    # asks a second signal besides the rule.
    t, _ = flag(
        [
            "卷钱跑路前还发了篇感谢信，真有仪式感",
            "说白了就是来圈钱的，关门是早晚的事",
            "这算诈骗吗？预付的学费能报警吗",
            "警方已经以涉嫌诈骗立案了",
            "小心有人冒充客服打电话诈骗",
        ],
        threshold_abuse=0.6,
    )
    assert t["flag_abuse"].to_list() == [True, True, False, False, False]
    assert all(any(e.startswith("rule fraud_accusation") for e in t["evidence_abuse"][i]) for i in (0, 1))
    assert t["score_offence_model"][0] < 0.5  # the rule, not the model, carries it


def test_a_rule_is_void_where_its_unless_pattern_matches(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text('rules:\n  - name: fraud\n    pattern: "诈骗"\n    unless: "吗|警方"\n    weight: 0.6\n', encoding="utf-8")
    keys = [match_key(normalize_text(t)) for t in ("就是诈骗", "这算诈骗吗?", "警方以诈骗立案")]
    assert [[r.name for r, _ in hits] for hits in rule_matches(load_rules(rules), keys)] == [["fraud"], [], []]


def test_conspiracy_rests_on_a_claim_not_on_a_word():
    """The false flags found on a real stream (a one-character greeting, calling a post fake or
    "带节奏", blaming a person's motive) stay clean; claims of the genres real platforms see flag,
    and a debunking of the same claim does not."""
    clean = [
        "：早",
        "这新闻是假的吧，别带节奏了",
        "又是营销号带节奏，故意博眼球",
        "他是故意的吧，肯定是想红",
        "网传病毒是实验室造的，已经被辟谣了",
    ]
    claims = [
        "病毒就是美国实验室造的，故意放出来的",
        "转基因就是美国人想毁掉中国人的阴谋",
        "911就是美国自导自演的",
        "疫苗是用来控制人口的，比尔盖茨早就计划好了",
        "这事背后肯定是美国搞的鬼",
    ]
    t, _ = flag(clean + claims)
    assert t["flag_conspiracy"].to_list() == [False] * len(clean) + [True] * len(claims)
    assert all(any(e.startswith("rule ") for e in ev) for ev in t["evidence_conspiracy"][len(clean) :])


def test_evidence_lines_are_unique_within_a_row():
    from pipeline.config import FlagConfig
    from pipeline.scoring.score import CATEGORIES, score_texts

    rows = score_texts(["傻逼傻逼，你就是个傻逼，外地人都滚出去，外地人"], None, FlagConfig())
    for c in CATEGORIES:
        lines = rows[0][f"evidence_{c}"]
        assert len(lines) == len(set(lines)), lines
    assert any("傻逼" in line for line in rows[0]["evidence_abuse"])


def test_the_default_run_embeds_in_the_space_the_conspiracy_head_was_trained_in():
    # The head's probability counts only when the run's embedding model id is the one recorded in
    # models/conspiracy/head.json; a cache-key change once dropped it from every default run.
    from pipeline.config import load_config
    from pipeline.models.embedder import Embedder
    from pipeline.scoring.score import load_resources, models_dir_of

    cfg = load_config()
    assert Embedder(cfg.embed, None).model_id == load_resources(models_dir_of(cfg.flag))["conspiracy_head"].embed_model
