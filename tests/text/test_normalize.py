from pipeline.text.normalize import emoji_tags, normalize_text


def test_fullwidth_traditional_whitespace_and_tags():
    assert normalize_text("點讚!家門口就有站 [赞][赞]") == "点赞!家门口就有站"
    assert normalize_text("ＡＢＣ１２３　前 沿") == "ABC123 前 沿"
    assert normalize_text("  多个   空格\n换行\t制表 ") == "多个 空格 换行 制表"


def test_invisible_and_control_characters_are_removed():
    assert normalize_text("加\u200b微\u200d信\x07") == "加微信"


def test_tag_only_comment_keeps_its_words():
    assert normalize_text("[哈哈][哈哈]") == "哈哈 哈哈"
    assert emoji_tags("好[点赞]的[得瑟]") == ["点赞", "得瑟"]


def test_text_without_tags_is_unchanged_apart_from_normalisation():
    assert normalize_text("一步一个脚印") == "一步一个脚印"


def test_traditional_detection_does_not_skip_what_opencc_would_change():
    # 麽 and the phrase 瞭解 are rewritten by OpenCC although 瞭 alone is not in its character table.
    assert normalize_text("這是什麽") == "这是什么"
    assert normalize_text("我不瞭解") == "我不了解"
    assert normalize_text("已经是简体") == "已经是简体"
