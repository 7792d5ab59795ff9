import json

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_evaluate_prints_per_category_scores(tmp_path):
    comments = tmp_path / "c.csv"
    comments.write_text(
        "comment_id,text\na,你就是个傻逼\nb,今天天气不错\nc,背后肯定有境外势力在操控\nd,他因洗钱被判了十年\n", encoding="utf-8"
    )
    labels = tmp_path / "labels.csv"
    labels.write_text("comment_id,abusive,conspiracy\na,1,0\nb,0,0\nc,0,1\nd,0,0\n", encoding="utf-8")
    result = run_cli("evaluate", "--input", str(comments), "--labels", str(labels))
    assert result.returncode == 0, result.stderr
    table, line = result.stdout.strip().rsplit("\n", 1)
    scores = json.loads(line)
    assert set(scores) == {"abuse", "conspiracy", "macro_f1_mean", "offensive", "clean_flagged"}
    assert scores["abuse"]["n"] == 4 and scores["abuse"]["positives"] == 1
    assert scores["conspiracy"]["recall"] == 1.0 and scores["conspiracy"]["precision"] == 1.0
    # offensive = abusive or hate (only abusive given here); clean = rows b and d, neither flagged
    assert scores["offensive"]["positives"] == 1
    assert scores["clean_flagged"] == {"n": 2, "flagged": 0, "share": 0.0}
    assert "macroF1" in table and "clean comments flagged in any category: 0 of 2" in table


@pytest.mark.slow
def test_evaluate_without_label_columns_is_a_clear_error(tmp_path):
    comments = tmp_path / "c.jsonl"
    comments.write_text('{"comment_id": "a", "text": "你好"}\n', encoding="utf-8")
    labels = tmp_path / "labels.csv"
    labels.write_text("comment_id,stars\na,5\n", encoding="utf-8")
    result = run_cli("evaluate", "--input", str(comments), "--labels", str(labels))
    assert result.returncode == 2 and "no label columns" in result.stderr
