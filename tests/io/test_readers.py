import polars as pl
import pytest

from conftest import SEED, needs_shared
from pipeline.io.readers import InputFileError, read_inputs, thread_comment_start


def read(path, **kw):
    return read_inputs([path], kw.get("id_column", "comment_id"), kw.get("text_column", "text"))


def test_jsonl_keeps_every_line_with_errors(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(
        b'{"comment_id": "a", "text": "hello"}\n'
        b"not json\n"
        b"[1, 2]\n"
        b'{"comment_id": "b", "text": 666}\n'
        b'{"comment_id": "c", "text": null}\n'
        b'{"comment_id": "d", "text": "\xff\xfe bad"}\n'
        b"\n"
        b'{"comment_id": "e", "body": "x"}\n'
    )
    t = read(p)
    assert t["source_row"].to_list() == [1, 2, 3, 4, 5, 6, 7, 8]  # every line, the blank one too
    errors = dict(zip(t["source_row"], t["read_error"]))
    assert errors[1] is None and errors[4] is None
    assert "invalid JSON" in errors[2]
    assert "not an object" in errors[3]
    assert "null" in errors[5]
    assert "UTF-8" in errors[6]
    assert "no 'text' field" in errors[8]
    assert "blank line" in errors[7]
    assert t.filter(pl.col("source_row") == 4)["raw_text"].item() == "666"


def test_csv_with_other_column_names(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text('id,body\n1,"第一条, 带逗号"\n2,第二条\n', encoding="utf-8")
    t = read_inputs([p], "id", "body")
    assert t["raw_id"].to_list() == ["1", "2"]
    assert t["raw_text"].to_list() == ["第一条, 带逗号", "第二条"]


def test_csv_without_text_column_names_the_fix(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("id,body\n1,x\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="set ingest.text_column"):
        read(p)


def test_parquet(tmp_path):
    p = tmp_path / "c.parquet"
    pl.DataFrame({"comment_id": ["x", None], "text": ["甲", "乙"]}).write_parquet(p)
    t = read(p)
    assert t["raw_id"].to_list() == ["x", None] and t["raw_text"].to_list() == ["甲", "乙"]


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read(tmp_path / "nope.jsonl")
    (tmp_path / "c.xlsx").write_text("x")
    with pytest.raises(InputFileError, match="unsupported"):
        read(tmp_path / "c.xlsx")


def test_thread_rule_on_a_written_thread(tmp_path):
    lines = [
        "标题",
        "正文第一段。",
        "![](http://example.com/a.jpg)",
        "正文第二段。",
        "文/编辑:某某",
        "参考资料:",
        "某报:2024-01-02《某条新闻》",
        "第一条评论",
        "第二条评论",
        "",
        "第三条评论",
    ]
    p = tmp_path / "t.txt"
    p.write_text("\n".join(lines), encoding="utf-8")
    t = read(p)
    assert t["raw_text"].to_list() == ["第一条评论", "第二条评论", "第三条评论"]
    assert t["source_row"].to_list() == [8, 9, 11]


def test_thread_separator_line_wins():
    assert thread_comment_start(["文章", "![](x)", "---", "评论一", "评论二"]) == 3
    assert thread_comment_start(["只有评论", "第二条"]) == 0


@needs_shared(SEED)
def test_seed_thread_has_78_comments():
    t = read(SEED)
    assert t.height == 78
    assert t["raw_text"][0].startswith("根本原因")


CONTEXT = ("thread_id", "created_at", "user_id")


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_thread_time_and_author_columns_are_read_when_present(tmp_path, kind):
    rows = [
        {"comment_id": "a", "text": "第一条", "thread_id": "t1", "created_at": "2024-05-01 20:15", "user_id": "u1"},
        {"comment_id": "b", "text": "第二条", "thread_id": "t2", "created_at": "1714594530", "user_id": None},
    ]
    p = tmp_path / f"c.{kind}"
    table = pl.DataFrame(rows)
    {"jsonl": table.write_ndjson, "csv": table.write_csv, "parquet": table.write_parquet}[kind](p)
    t = read_inputs([p], "comment_id", "text", None, CONTEXT)
    assert t["raw_thread"].to_list() == ["t1", "t2"]
    assert t["raw_time"].to_list() == ["2024-05-01 20:15", "1714594530"]
    assert t["raw_user"].to_list() == ["u1", None]
    # Not asked for, or not in the file: null, and the comment is still read.
    t = read_inputs([p], "comment_id", "text", None, (None, "posted", None))
    assert t["raw_text"].to_list() == ["第一条", "第二条"] and t["raw_time"].null_count() == 2


def test_a_thread_file_is_one_thread_named_after_the_file(tmp_path):
    p = tmp_path / "thread_42.txt"
    p.write_text("标题\n---\n评论一\n评论二\n", encoding="utf-8")
    t = read_inputs([p], "comment_id", "text", None, CONTEXT)
    assert t["raw_thread"].to_list() == ["thread_42", "thread_42"]
