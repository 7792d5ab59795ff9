"""The matching key: what two comments must share (nearly) to be near-duplicates.

It starts from `text_norm` (NFKC, so full-width letters and digits are already half-width;
traditional already simplified; emoji tags and zero-width characters already gone) and removes
everything people vary to dodge copy-paste filters:

1. case:          "V信" = "v信"
2. look-alikes:   Cyrillic and Greek letters that look Latin ("vх" with a Cyrillic х), see HOMOGLYPHS
3. separators:    whitespace, punctuation, symbols, emoji, control characters ("前 沿 科 技", "加.微.信")
4. variants:      homophones and look-alike spellings of the words spam depends on, see VARIANTS
5. repeats:       runs of one character become one ("哈哈哈哈" = "哈", "!!!" is already gone)

A comment with nothing left (emoji- or punctuation-only) keeps a lighter key: "\\0" + the text
without whitespace, so "？？？" groups with "？？？" and not with "！！！".
The key is only for matching; no one reads it, and `text` is never changed.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Letters from other scripts that render like Latin letters; spammers swap them in so that a
# filter looking for "vx" or "qq" misses. Lower-case only: keys are lower-cased first.
HOMOGLYPHS = str.maketrans(
    {
        # Cyrillic
        "а": "a",
        "в": "b",
        "е": "e",
        "ё": "e",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "і": "i",
        "ј": "j",
        "ѕ": "s",
        "ԁ": "d",
        "ԛ": "q",
        "ԝ": "w",
        "ӏ": "l",
        # Greek
        "α": "a",
        "β": "b",
        "ε": "e",
        "ι": "i",
        "κ": "k",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "ω": "w",
        # The Chinese zero is a digit that looks like a circle; NFKC leaves it alone.
        "〇": "0",
        # "+V信" and "➕v" mean "加V信": keep the word before symbols are removed.
        "+": "加",
        "➕": "加",
        "＋": "加",
    }
)

# (pattern, replacement, why). Applied to the key after separators are removed, so "v 信" is
# already "v信". Each entry is a spelling used to dodge keyword filters, found in ad and scam copy.
VARIANTS: list[tuple[str, str, str]] = [
    (
        r"(?:威|薇|微|徽|维|喂|危|v|w)(?:信|芯|xin)|(?<![a-z])(?:vx|wx)(?![a-z])|weixin|wechat|微x|威x|薇x",
        "微信",
        "WeChat: homophones (威信, 薇信, 维信), letters (V信, vx, wx) and pinyin for 微信",
    ),
    (r"扣扣|叩叩|企鹅号|qq号|q号", "qq", "QQ: 扣扣 is its homophone nickname, 企鹅 its mascot"),
    (r"(?<=qq|扣扣|叩叩|微信|威信|薇信|vx|wx)裙", "群", "群 (group) written as its homophone 裙 after QQ/WeChat"),
    (r"兼值|兼织|兼只", "兼职", "兼职 (part-time job) scams written with homophones"),
    (r"日洁|日节", "日结", "日结 (paid daily), a scam keyword, with homophones"),
    (r"刷蛋|刷丹", "刷单", "刷单 (fake orders) with homophones"),
    (r"菠菜|波菜", "博彩", "菠菜 is the standard homophone for 博彩 (gambling) in ads"),
    (r"dai款|袋款|代款", "贷款", "贷款 (loans) ads: pinyin and homophones"),
    (
        r"(?:丝|私)(?:聊|l)|(?<![a-z])s(?:聊|l(?![a-z]))|私撩",
        "私聊",
        "私聊 (private chat) written as 丝聊 or sl (not the sl inside a word)",
    ),
    (r"(?:伽|咖|家|佳)(?:我|窝)", "加我", "加我 (add me) with homophones for 加"),
    (r"(?<![a-z])tg(?![a-z])|电报号|纸飞机", "电报", "Telegram: its nickname 纸飞机 and abbreviation tg (not the tg inside a word)"),
]
TONE_MARKS = {"\u0300", "\u0301", "\u0304", "\u030c"}  # grave, acute, macron, caron; ü keeps its dots
_VARIANT_RE = re.compile("|".join(f"({p})" for p, _, _ in VARIANTS))
_SEPARATORS = re.compile(r"[\W_]+")  # not a letter or digit of any script: punctuation, symbols, emoji, space
_REPEATS = re.compile(r"(.)\1+")


def _replace_variant(m: re.Match) -> str:
    return VARIANTS[m.lastindex - 1][1]


def match_key(text_norm: str, fold_repeats: bool = True) -> str:
    """`fold_repeats=False` keeps runs of one character: the spam rules read phone numbers (13811112222)."""
    s = text_norm.lower().translate(HOMOGLYPHS)
    s = _SEPARATORS.sub("", s)
    s = _VARIANT_RE.sub(_replace_variant, s)
    if fold_repeats:
        s = _REPEATS.sub(r"\1", s)
    if s:
        return s
    return "\0" + "".join(text_norm.split())


@lru_cache(maxsize=1)
def _homophones() -> dict[int, str]:
    """Chinese character -> one fixed character with the same toneless pinyin (first reading).
    From pypinyin's table; tones are dropped because dodges ignore them (薇/微/威 are all wei)."""
    from pypinyin.pinyin_dict import pinyin_dict

    def toneless(reading: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFD", reading) if c not in TONE_MARKS)

    sound = {cp: toneless(r.split(",")[0]) for cp, r in pinyin_dict.items() if 0x3400 <= cp <= 0x9FFF}
    first: dict[str, int] = {}
    for cp in sorted(sound):
        first.setdefault(sound[cp], cp)
    return {cp: chr(first[s]) for cp, s in sound.items() if first[s] != cp}


def sound_key(key: str) -> str:
    """The key as it sounds: every Chinese character replaced by a fixed homophone, so that
    "加维信" and "加卫信" (both jia wei xin) match like "加微信" without a table entry. Used to find
    and verify near-duplicates of keys long enough to carry a sentence (see the dedup stage)."""
    return key.translate(_homophones())


def is_fallback(key: str) -> bool:
    """True for keys of comments that had no letters or digits (emoji, punctuation only)."""
    return key.startswith("\0")
