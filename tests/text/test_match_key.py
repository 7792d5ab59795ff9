"""Each evasion the matching key must undo, on cases written for this project."""

import pytest

from pipeline.text.match_key import VARIANTS, is_fallback, match_key
from pipeline.text.normalize import normalize_text


def key(text: str) -> str:
    return match_key(normalize_text(text))


@pytest.mark.parametrize(
    "a, b, why",
    [
        ("加微信领取优惠券", "加ＷＸ领取优惠券", "full-width letters and the wx abbreviation"),
        ("前沿科技的发展", "前 沿 科 技 的 发 展", "spaces between the characters"),
        ("這家店的服務態度真差", "这家店的服务态度真差", "traditional characters"),
        ("这家店的服务态度真差", "这家店🙂的服务💢态度真差!!!", "emoji and punctuation sprinkled in"),
        ("加微信领取", "加\u200b微\u200d信领取", "zero-width characters"),
        ("加微信领取", "加V信领取", "a letter for a character"),
        ("加微信领取", "加威信领取", "homophone 威信"),
        ("加微信领取", "加薇信领取", "homophone 薇信"),
        ("加微信领取", "+vx领取", "plus sign and vx"),
        ("加qq群领取", "加扣扣裙领取", "扣扣 and 裙 for QQ群"),
        ("vx领取", "vх领取", "a Cyrillic х that looks Latin"),
        ("太差了", "太差了了了了", "repeated characters"),
        ("Hello World", "hello world", "case"),
        ("博彩网站", "菠菜网站", "菠菜 for 博彩"),
        ("兼职日结", "兼值日洁", "homophones of a scam keyword"),
    ],
)
def test_evasions_give_the_same_key(a, b, why):
    assert key(a) == key(b), why


@pytest.mark.parametrize("a, b", [("最棒中国", "最棒中国人"), ("一步一个脚印", "一步两个脚印"), ("？？？", "！！！"), ("😀", "😡")])
def test_different_texts_keep_different_keys(a, b):
    assert key(a) != key(b)


def test_emoji_only_comments_fall_back_to_a_lighter_key():
    assert is_fallback(key("😀 😀")) and key("😀 😀") == key("😀😀")
    assert not is_fallback(key("好"))


def test_every_variant_says_why():
    assert all(why and len(why) > 10 for _, _, why in VARIANTS)


def test_sound_key_makes_homophones_equal_and_keeps_other_words_apart():
    from pipeline.text.match_key import sound_key

    assert sound_key(key("加卫信了解详情")) == sound_key(key("加微信了解详情"))
    assert sound_key(key("好想尼啊宝贝")) == sound_key(key("好想你啊宝贝"))
    assert sound_key(key("今天天气很好")) != sound_key(key("今天心情很好"))
