"""Spam and ads: the fourth category, scored by the rules in models/rules/spam.yaml.

The rules read a spam key built from the dedup stage's matching key (pipeline/text/match_key.py),
so an evasion that fools one fools neither: case, look-alike letters, separators ("加.微.信"),
homophones of the handle words (V信, 威信, 薇信, vx -> 微信; 扣扣, 企鹅号 -> qq; 裙 -> 群) are undone
there. Before it, three things a number filter trips over are taken out (dates, clock times,
public hotlines such as 12315 after 拨打), and a few emoji that stand for handle words are read as
those words; after it, digits written as Chinese numerals (幺三八..., 壹贰叁...) are read as digits.
Full-width, circled and keycap digits are already ASCII digits in the key (NFKC and separator
removal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import yaml

from pipeline.scoring.rules import Rule, load_rules, noisy_or, rule_matches
from pipeline.text.match_key import HOMOGLYPHS, match_key

EMOJI_WORDS = str.maketrans({"🐧": "qq", "✈": "飞机号", "🛩": "飞机号", "📞": "电话", "☎": "电话", "📱": "手机", "🔞": "成人内容"})
DATE = re.compile(r"\d{2,4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}\s*[日号]?|\d{1,2}\s*月\s*\d{1,2}\s*[日号]|\d{4}\s*年")
CLOCK = re.compile(r"\d{1,2}\s*[:：]\s*\d{2}(?:\s*[:：]\s*\d{2})?")
# A public service line a commenter recommends ("打12315投诉", "拨打96110"), not a contact handle.
HOTLINE = re.compile(
    r"(?:热线|拨打|打|致电|投诉|举报|报警|电话|客服|联系)\s*(?:电话)?\s*(?:是|为)?\s*[:：]?\s*(?:1\d{2,4}|9\d{4})(?!\s*[\d.\-])"
)
# Spam phrases in quotes are being talked about ("网上那些「宝妈在家日入五百」"), not offered.
QUOTED = re.compile(r"「[^」]{1,80}」|『[^』]{1,80}』|“[^”]{1,80}”|‘[^’]{1,80}’|\"[^\"]{1,80}\"")
# Weibo's emoticon tags ("[互粉]", "[话筒]") and @mentions of other users are not offers; an
# @name right after a handle word ("电报 @debt_help") is the handle and stays.
EMOTICON = re.compile(r"\[[^\[\]\s]{1,6}\]")
MENTION = re.compile(r"@[\w\-]{1,30}")
HANDLE_BEFORE = re.compile(r"(?:电报|飞机|tg|telegram|ins|推特|twitter|whatsapp|line)(?:号|搜|搜索|id|群)?[\s:：]*$", re.I)
# "vx：abc_de" is an id offered; "微信say goodbye" is not: the colon after a handle word is kept in
# the key as 号 (the key drops punctuation).
HANDLE_COLON = re.compile(
    r"(微信|威信|薇信|[vV]信|[vVwW]\s*[xX]|[vV]|薇|微|威|qq|QQ|[qQ]|扣扣|企鹅|电报|飞机|tg|TG|line|LINE|whatsapp|id|ID|赖|客服)[^\w:：]{0,2}\s*[:：]"
)
SPACED_LINK = re.compile(r"h[\s.·_\-]+t[\s.·_\-]+t[\s.·_\-]+p", re.I)  # "h t t p s": a link filter dodge
# Handle words written in pinyin ("s-i-x-i-n", "kou kou"), read in the key.
PINYIN = [("sixin", "私信"), ("siliao", "私聊"), ("koukou", "qq"), ("zhuye", "主页"), ("jiaqun", "加群"), ("dianhua", "电话")]
PINYIN += [
    ("jiawo", "加我"),
    ("jia微信", "加微信"),
    ("kaipiao", "开票"),
    ("daikai", "代开"),
    ("代kai", "代开"),
    ("kai票", "开票"),
    ("nicheng", "昵称"),
]
PINYIN += [("zhu页", "主页"), ("wei信", "微信"), ("jia群", "加群")]
# Pinyin inside an id ("fp_daikai66") is the id: only pinyin that starts a word is read.
PINYIN_RE = [(re.compile(rf"(?<![a-z0-9]){re.escape(p)}"), w) for p, w in PINYIN]
# "薇信 rs_team_weibo": a handle word, then an id with _ or - in it, is an id offered (the key drops
# the _ that shows it).
HANDLE_ID = re.compile(r"(微信|威信|薇信|[vV]信|[vVwW]\s?[xX]|qq|QQ|电报|tg|TG)\s*(?=[a-zA-Z][a-zA-Z0-9]*[_\-][a-zA-Z0-9_\-]{2,})")
# Initials ads use for the words filters look for (dk = 贷款, bc = 博彩, fp = 发票, yp = 约炮, kf = 客服,
# dd我 = 滴滴我), standing alone between Chinese characters or digits.
INITIALS = [
    (re.compile(rf"(?<![a-z号信]){a}(?=[\u4e00-\u9fff]|\d|$)"), w)
    for a, w in [
        ("dk", "贷款"),
        ("bc", "博彩"),
        ("fp", "发票"),
        ("yp", "约炮"),
        ("kf", "客服"),
        ("hb", "花呗"),
        ("jb", "借呗"),
        ("dd(?=我)", "滴滴"),
    ]
]
# Words an ad in pinyin uses that the rules name only inside longer patterns.
PINYIN_EXTRA = ["微信", "加我", "加群", "私聊", "私信", "主页", "头像", "昵称", "贷款", "兼职", "小姐姐", "在线", "约炮", "刷单"]
PINYIN_EXTRA += ["稳赚", "博彩", "发票", "涨粉", "找我", "导师", "带你", "裸聊", "减肥", "进群", "牛股", "代开"]
SPACED_HINT = re.compile(r"[a-zA-Z]{2,}\s[a-zA-Z]")
# "赖" is LINE in Taiwan; "亻言" spells 信 by its parts; 薇芯 and its kin are 微信.
PARTS_OF_XIN = re.compile(r"亻\s*言")
SPAM_WORDS = [("賴", "赖"), ("薇芯", "微信"), ("威芯", "微信"), ("维芯", "微信"), ("v芯", "微信"), ("V芯", "微信")]
SPAM_WORDS += [("日洁", "日结"), ("日节", "日结"), ("丝我", "私我"), ("丝信", "私信")]
# Weibo's reply prefix names the user replied to, not a handle.
REPLY_PREFIX = re.compile(r"回复\s*@[\w\-]{1,30}\s*[:：]")
# "tg @ name", "IG @ name": the handle, spaced from its word.
# 赖 after 信/依/耍/抵 is a word (值得信赖), not LINE.
HANDLE_AT = re.compile(r"(tg|TG|电报|飞机|✈️?|ins|IG|ig|(?<![信依耍抵无])[赖賴]|line|LINE|WhatsApp|whatsapp)\s*@\s*")
NUMERALS = str.maketrans(
    {**dict(zip("零〇一二三四五六七八九", "00123456789")), **dict(zip("壹贰叁肆伍陆柒捌玖", "123456789")), "幺": "1", "两": "2"}
)
NUMERAL_RUN = re.compile(
    r"[零〇一二三四五六七八九幺壹贰叁肆伍陆柒捌玖两\d]{5,}|(?<=[a-z0-9信群号话机报])[零〇一二三四五六七八九幺壹贰叁肆伍陆柒捌玖两]{3,}"
)


@dataclass(frozen=True)
class SpamRules:
    rules: list[Rule]
    firm: frozenset[str]  # rules that hold even in a comment that warns about spam
    channels: frozenset[str]  # rules that give readers a way to reach the writer
    lures: frozenset[str]  # channels that point readers somewhere on purpose (lure, pointer)
    weak: frozenset[str]  # channels too common to make an ad firm (私信, 进群, a bare long number)
    pinyin: PinyinReader
    warning: re.Pattern
    warning_factor: float
    civic: re.Pattern


WEAK_CHANNEL = 0.5  # a channel rule weighing less alone is a weak channel


@lru_cache(maxsize=4)
def load_spam_rules(models_dir: Path) -> SpamRules:
    path = models_dir / "rules" / "spam.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    firm = frozenset(r["name"] for r in data["rules"] if r.get("firm"))
    channels = frozenset(r["name"] for r in data["rules"] if r.get("channel"))
    lures = frozenset(r["name"] for r in data["rules"] if r.get("lure"))
    weak = frozenset(r["name"] for r in data["rules"] if r.get("channel") and r["weight"] < WEAK_CHANNEL)
    return SpamRules(
        load_rules(path),
        firm,
        channels,
        lures,
        weak,
        PinyinReader.of_rules(data["rules"]),
        re.compile(data["warning"]),
        float(data["warning_factor"]),
        re.compile(data["civic"]),
    )


def _drop_mentions(text: str) -> str:
    return MENTION.sub(
        lambda m: m.group(0) if HANDLE_BEFORE.search(text[max(0, m.start() - 12) : m.start()].translate(HOMOGLYPHS)) else " ", text
    )


# Numbers in a list ("九一八、一二一三、八一三") stay apart when the key drops the commas.
LIST_COMMA = re.compile(
    r"(?<=[零〇一二三四五六七八九幺壹贰叁肆伍陆柒捌玖两\d])[、，,;；](?=[零〇一二三四五六七八九幺壹贰叁肆伍陆柒捌玖两\d])"
)


DIGIT = re.compile(r"\d")
LATIN = re.compile(r"[a-z]")


class PinyinReader:
    """Reads ads written in pinyin ("dai kuan zhao wo, bu kan zheng xin") as the words the rules look
    for: every Chinese word of the rules (cut by jieba) is known by its toneless pinyin. Only text that
    is mostly pinyin syllables is read, so English ("he can go") and ids stay as they are."""

    def __init__(self, words: list[str]):
        from pypinyin import lazy_pinyin

        by_sound: dict[str, str] = {}
        for w in sorted(set(words), key=lambda w: (-len(w), w)):
            by_sound.setdefault("".join(lazy_pinyin(w)), w)
        self.by_sound = by_sound
        self.syllables = frozenset({syl for w in words for syl in lazy_pinyin(w)} | _syllables())
        spaced = [r"\s?".join(f) for f in sorted(by_sound, key=len, reverse=True)]
        self.pattern = re.compile(r"(?<![a-z])(?:" + "|".join(spaced) + r")(?![a-z])")

    @classmethod
    def of_rules(cls, rules: list[dict]) -> PinyinReader:
        import jieba

        runs = {run for r in rules for run in re.findall(r"[\u4e00-\u9fff]{2,}", r["pattern"])}
        words = runs | {w for run in runs for w in jieba.lcut(run) if len(w) >= 2}
        return cls(sorted(words | set(PINYIN_EXTRA)))

    def read(self, low: str) -> str:
        tokens = re.findall(r"[a-z]+", low)
        if len(tokens) < 3 or sum(t in self.syllables for t in tokens) < 0.7 * len(tokens):
            return low
        low = JIA_HANDLE.sub("加", low)  # "jia w x", "jia v"
        return self.pattern.sub(lambda m: self.by_sound.get(re.sub(r"\s", "", m.group(0)), m.group(0)), low)


JIA_HANDLE = re.compile(r"(?<![a-z])jia\s?(?=(?:v|w\s?x|v\s?x|qq?)(?![a-z]))")


def _syllables() -> frozenset[str]:
    import unicodedata

    from pypinyin.pinyin_dict import pinyin_dict

    readings = {r for rs in pinyin_dict.values() for r in rs.split(",")}
    return frozenset("".join(c for c in unicodedata.normalize("NFD", r) if c.isascii()) for r in readings)


def spam_key(text_norm: str, pinyin: PinyinReader | None = None) -> str:
    # Each pass runs only where its mark is in the text: most comments have no digits, @, colon,
    # quotes or latin letters, and this key is built for every comment of a run.
    s = LIST_COMMA.sub("隔", text_norm)
    for a, b in SPAM_WORDS:
        s = s.replace(a, b)
    if "亻" in s:
        s = PARTS_OF_XIN.sub("微信", s)
    if "@" in s:
        s = _drop_mentions(HANDLE_AT.sub(r"\1号", REPLY_PREFIX.sub(" ", s)))
    s = s.translate(EMOJI_WORDS)
    if "[" in s:
        s = EMOTICON.sub(" ", s)
    s = QUOTED.sub(" ", s)
    if pinyin is not None and SPACED_HINT.search(s):
        s = pinyin.read(s.lower())
    if ":" in s or "：" in s:
        s = HANDLE_COLON.sub(r"\1号", s)
    if "_" in s or "-" in s:
        s = HANDLE_ID.sub(r"\1号", s)
    if DIGIT.search(s):
        s = HOTLINE.sub(" ", CLOCK.sub(" ", DATE.sub(" ", s)))
    key = match_key(SPACED_LINK.sub(" 点网址 ", s), fold_repeats=False)
    if LATIN.search(key):
        for word_in_pinyin, word in PINYIN_RE:
            key = word_in_pinyin.sub(word, key)
        for initials, word in INITIALS:
            key = initials.sub(word, key)
    # Runs of 5+ numerals are numbers (phone, QQ), and 3+ right after an id or handle word;
    # shorter ones are words (一五一十, 三五成群).
    # A number spelled in numerals is a dodge in itself: the key marks it (rule spelled_number).
    return NUMERAL_RUN.sub(_numerals_as_digits, key)


SPELLED = "数写"  # marker before a number that was written in Chinese numerals


def _numerals_as_digits(m: re.Match) -> str:
    run = m.group(0)
    digits = run.translate(NUMERALS)
    # "二三三三三三" is 233333, laughter: a number has 3+ different digits.
    counting = digits in "01234567890" or digits in "9876543210"  # 一二三四五 is counting
    spelled = sum(not c.isdigit() for c in run) >= 3 and len(digits) >= 5 and len(set(digits)) >= 3 and not counting
    return SPELLED + digits if spelled else digits


NOTHING_OFFERED_CAP = 0.55  # below flag.threshold_spam's default
SECOND_SPAN_SHARE = 0.5  # a second, different phrase of one offer rule ("约吗 ... 附近一公里") adds half its weight


def _with_second_spans(found: list, key: str, channels: frozenset[str]) -> list:
    out = []
    for rule, span in found:
        out.append((rule, span))
        if rule.name in channels:
            continue  # two links or two numbers are one way to reach the writer
        other = next((m.group(0) for m in rule.pattern.finditer(key) if m.group(0) not in span and span not in m.group(0)), None)
        if other is not None:
            out.append((replace(rule, weight=rule.weight * SECOND_SPAN_SHARE), other))
    return out


def spam_scores(texts_norm: list[str], models_dir: Path) -> list[tuple[float, list[str]]]:
    """(score_spam, evidence_spam) of each text."""
    spam = load_spam_rules(models_dir)
    keys = [spam_key(t, spam.pinyin) for t in texts_norm]
    hits = [_with_second_spans(found, key, spam.channels) for found, key in zip(rule_matches(spam.rules, keys), keys)]
    out = []
    for key, found in zip(keys, hits):
        if not found:
            out.append((0.0, []))
            continue
        # Rules that matched the same words are one signal, as sure as the surest of them (a phone
        # number is not also a second, bare long number; 私聊我 is one lure, not two).
        signals: list[tuple[str, float]] = []
        for rule, span in sorted(found, key=lambda f: -len(f[1])):
            same = next((i for i, (s, _) in enumerate(signals) if span in s), None)
            if same is None:
                signals.append((span, rule.weight))
            else:
                signals[same] = (signals[same][0], max(signals[same][1], rule.weight))
        score = noisy_or([w for _, w in signals])
        evidence = [f"rule {r.name} '{span}'" for r, span in found]
        # An offer with a way to reach the writer, or a lure or pointer beside another signal, is an ad
        # even beside words of warning; two offer words without a channel ("带你炒币稳赚...跑路了"),
        # two weak channels ("他从不私信让粉丝加群") or an offer beside a weak one ("有人私信我说能帮忙
        # 刷粉...典型套路") are talk about ads.
        names = {r.name for r, _ in found}
        offer, channel = bool(names - spam.channels), bool(names & spam.channels - spam.weak)
        firm = bool(names & spam.firm) or (len(signals) >= 2 and ((offer and channel) or bool(names & spam.lures)))
        if not (firm or offer or names & spam.lures):
            # A way to reach someone with nothing offered (a museum's phone numbers) is not an ad.
            score = min(score, NOTHING_OFFERED_CAP)
        if c := spam.civic.search(key):
            score *= spam.warning_factor
            evidence.append(f"lost-and-found or appeal ('{c.group(0)}'): x{spam.warning_factor}")
        elif not firm and (w := spam.warning.search(key)):
            score *= spam.warning_factor
            evidence.append(f"warns or reports ('{w.group(0)}'): x{spam.warning_factor}")
        out.append((score, evidence))
    return out
