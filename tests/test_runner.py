"""End to end, on the real models: the seed thread, the bundled sample, mixed inputs, bad inputs."""

from __future__ import annotations

import json

import polars as pl
import pytest

from conftest import PROJECT, SAMPLE, SEED, run_cli, run_pipeline, seed_comments, write_jsonl
from pipeline.stages.export import CONTRACT

run = run_pipeline


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    if not SEED.exists():
        pytest.skip(f"needs ../shared data: {SEED} is absent")
    tmp = tmp_path_factory.mktemp("seed")
    src = write_jsonl(tmp / "seed.jsonl", [{"comment_id": f"c{n:02d}", "text": t} for n, t in enumerate(seed_comments(), 1)])
    out = tmp / "run"
    result = run_cli("run", "--input", str(src), "--output", str(out))
    assert result.returncode == 0, result.stderr
    return src, out, result


def test_seed_contract(seed_run):
    _, out, result = seed_run
    c = pl.read_parquet(out / "comments.parquet")
    assert c.columns[: len(CONTRACT)] == CONTRACT
    assert c["comment_id"].to_list() == [f"c{n:02d}" for n in range(1, 79)]
    g = dict(zip(c["comment_id"], c["dup_group"]))
    assert g["c13"] == g["c18"]
    assert len({v for k, v in g.items() if k not in ("c13", "c18")}) == 76
    assert c.filter(pl.col("comment_id").is_in(["c13", "c18"]))["dup_group_size"].to_list() == [2, 2]
    for cat in ("abuse", "hate", "conspiracy"):
        assert c[f"score_{cat}"].is_between(0, 1).all()
        assert c[f"flag_{cat}"].dtype == pl.Boolean
    assert (c["needs_review"] == (c["flag_abuse"] | c["flag_hate"] | c["flag_conspiracy"])).all()
    assert str(out) in result.stdout


def test_seed_outputs_and_manifest(seed_run):
    src, out, _ = seed_run
    topics = pl.read_parquet(out / "topics.parquet")
    c = pl.read_parquet(out / "comments.parquet")
    assert set(c["topic_id"].unique()) <= set(topics["topic_id"])
    assert topics["size"].sum() == 78
    assert all(len(k) > 0 for k in topics.filter(pl.col("topic_id") >= 0)["keywords"])
    queue = pl.read_parquet(out / "review" / "queue.parquet")
    assert queue.height == c.filter("needs_review")["dup_group"].n_unique() > 0
    assert queue["review_priority"].is_sorted(descending=True)
    csv = (out / "review" / "queue.csv").read_bytes()
    assert csv.startswith(b"\xef\xbb\xbf")  # so spreadsheet programs read it as UTF-8
    assert pl.read_csv(out / "review" / "queue.csv")["dup_group"].to_list() == queue["dup_group"].to_list()
    m = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in m["stages"]] == ["ingest", "embed", "dedup", "campaigns", "topics", "flag", "export"]
    assert all({"name", "status", "rows_in", "rows_out", "seconds"} <= set(s) for s in m["stages"])
    assert m["inputs"][0]["path"] == str(src) and len(m["inputs"][0]["sha256"]) == 64
    assert m["config"]["dedup"]["shingle_size"] == 2 and m["models"]["embedding"]
    assert not (out / "quarantine.parquet").exists()
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_rerun_reuses_stages_and_a_topic_change_reruns_only_topics(seed_run, tmp_path):
    src, _, _ = seed_run
    out = tmp_path / "run"
    first = run([src], out)
    before = pl.read_parquet(out / "comments.parquet")
    again = run([src], out)
    assert {s["name"]: s["status"] for s in again["stages"][:-1]} == dict.fromkeys(
        ["ingest", "embed", "dedup", "campaigns", "topics", "flag"], "cached"
    )
    assert pl.read_parquet(out / "comments.parquet").equals(before)
    changed = run([src], out, "topics.min_cluster_size=6")
    status = {s["name"]: s["status"] for s in changed["stages"]}
    assert status == {
        "ingest": "cached",
        "embed": "cached",
        "dedup": "cached",
        "campaigns": "cached",
        "topics": "ran",
        "flag": "cached",
        "export": "ran",
    }
    threshold = run([src], out, "topics.min_cluster_size=6", "flag.threshold_abuse=0.3")
    status = {s["name"]: s["status"] for s in threshold["stages"]}
    assert status == {
        "ingest": "cached",
        "embed": "cached",
        "dedup": "cached",
        "campaigns": "cached",
        "topics": "cached",
        "flag": "ran",
        "export": "ran",
    }
    assert first["stages"][1]["facts"]["distinct_texts"] == 78  # 13 and 18 differ by a character


@pytest.mark.slow
def test_topics_are_reproducible_across_processes(seed_run, tmp_path):
    src, out, _ = seed_run
    other = tmp_path / "again"
    result = run_cli("run", "--input", str(src), "--output", str(other), "--quiet")
    assert result.returncode == 0, result.stderr
    a, b = (pl.read_parquet(d / "comments.parquet") for d in (out, other))
    assert a["topic_id"].to_list() == b["topic_id"].to_list()
    assert a["dup_group"].to_list() == b["dup_group"].to_list()


@pytest.mark.slow
def test_bundled_sample_several_formats_and_generated_ids(tmp_path):
    thread = tmp_path / "thread.txt"
    thread.write_text("一篇文章的正文。\n![](http://example.com/x.jpg)\n文章评论一\n文章评论二\n", encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        b'{"comment_id": "b1", "text": "ok"}\n{oops\n{"comment_id": "b3", "text": ""}\n{"comment_id": "b1", "text": "same id again"}\n'
    )
    out = tmp_path / "run"
    m = run([SAMPLE, thread, bad], out)
    c = pl.read_parquet(out / "comments.parquet")
    sample_rows = len(SAMPLE.read_text(encoding="utf-8").splitlines())
    q = pl.read_parquet(out / "quarantine.parquet")
    assert m["summary"]["rows_in"] == c.height + q.height
    ids = c["comment_id"].to_list()
    assert ids[:sample_rows] == [f"s{i:03d}" for i in range(1, sample_rows + 1)]
    assert "thread:3" in ids and "thread:4" in ids
    assert "b1" in ids and "b1~2" in ids
    assert sorted(q["reason"].to_list()) == ["empty text", "invalid JSON (Expecting property name enclosed in double quotes at column 2)"]
    assert set(q["source_row"].to_list()) == {2, 3}


@pytest.mark.slow
def test_other_column_names_and_generated_csv_ids(tmp_path):
    csv = tmp_path / "more.csv"
    csv.write_text("body\n第一条来自表格的评论\n第二条来自表格的评论\n", encoding="utf-8")
    out = tmp_path / "run"
    run([csv], out, "ingest.text_column=body")
    c = pl.read_parquet(out / "comments.parquet")
    assert c["comment_id"].to_list() == ["more:2", "more:3"]
    assert c["topic_id"].to_list() == [0, 0]  # too few comments to cluster: one topic


def test_bad_input_file_exits_2_with_one_line(tmp_path):
    result = run_cli("run", "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "missing.jsonl" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("run", "--input", str(SAMPLE), "--output", str(tmp_path / "o"), "--set", "topics.nope=1")
    assert result.returncode == 2 and "nope" in result.stderr


@pytest.mark.slow
def test_embedding_cache_is_shared_between_output_dirs(tmp_path):
    first = run([SAMPLE], tmp_path / "a")
    second = run([SAMPLE], tmp_path / "b")
    assert second["stages"][1]["status"] == "ran"
    assert second["stages"][1]["facts"]["encoded"] == 0
    assert second["stages"][1]["facts"]["distinct_texts"] == first["stages"][1]["facts"]["distinct_texts"]


def test_describe_and_config_commands():
    described = run_cli("describe")
    assert described.returncode == 0 and "topics" in described.stdout and "needs:" in described.stdout
    config = run_cli("config")
    assert config.returncode == 0 and "min_cluster_size" in config.stdout


@pytest.mark.slow
def test_state_dir_carries_groups_to_the_next_batch(tmp_path):
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    day1 = write_jsonl(tmp_path / "day1.jsonl", rows[:20])
    # Day two: new comments plus fresh copies of day one's ad campaign, one with another homophone.
    day2 = write_jsonl(
        tmp_path / "day2.jsonl",
        rows[20:]
        + [
            {"comment_id": "n1", "text": "兼职日结,在家动动手指月入过万,加威信了解"},
            {"comment_id": "n2", "text": "兼 职 日 结,在家动动手指月入过万,加vx了解"},
        ],
    )
    state = tmp_path / "state"
    run([day1], tmp_path / "out1", f"run.state_dir={state}")
    second = run([day2], tmp_path / "out2", f"run.state_dir={state}")
    one = pl.read_parquet(tmp_path / "out1" / "comments.parquet")
    two = pl.read_parquet(tmp_path / "out2" / "comments.parquet")
    campaign = one.filter(pl.col("comment_id") == "s019")["dup_group"].item()
    assert two.filter(pl.col("comment_id").is_in(["n1", "n2"]))["dup_group"].to_list() == [campaign, campaign]
    assert two.filter(pl.col("comment_id") == "n1")["dup_rep_id"].item() in one["comment_id"].to_list()
    assert (state / "dedup_index.parquet").exists()
    assert second["stages"][2]["facts"]["rows_joining_earlier_groups"] >= 2


@pytest.mark.slow
def test_a_run_killed_with_sigkill_leaves_readable_files_and_the_next_run_finishes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--input", str(SAMPLE), "--output", str(out)],
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    # Kill it as soon as a stage result is on disk: mid-run, with later stages still to come.
    while time.time() < deadline and not list((out / "_stages").glob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    for f in out.rglob("*.parquet"):
        pl.read_parquet(f)  # every file under its real name is complete
    result = run_cli("run", "--input", str(SAMPLE), "--output", str(out), "--quiet")
    assert result.returncode == 0, result.stderr  # the stale lock of the killed run was taken over
    c = pl.read_parquet(out / "comments.parquet")
    assert c.height == len(SAMPLE.read_text(encoding="utf-8").splitlines())
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()


THEMES = {
    "food": [
        "这家火锅店的毛肚很新鲜,汤底也香",
        "楼下新开的面馆牛肉面分量足",
        "周末去吃了烤鸭,皮脆肉嫩",
        "这家奶茶太甜了,下次要少糖",
        "小龙虾麻辣味的最好吃",
        "早餐店的豆浆油条很地道",
        "川菜馆的水煮鱼辣得过瘾",
        "外卖的饺子皮太厚了,馅很少",
    ],
    "football": [
        "昨晚的比赛前锋连进两球太精彩了",
        "门将扑出点球,全场沸腾",
        "主教练换人太晚,输球了",
        "这个赛季联赛积分榜竞争激烈",
        "中场组织太差,传球总是失误",
        "客场逼平强队已经不错了",
        "裁判吹了一个有争议的点球",
        "后卫防守站位失误丢了球",
    ],
    "phones": [
        "新手机的电池续航一整天没问题",
        "这款手机拍照夜景效果很好",
        "系统更新以后手机发热严重",
        "屏幕刷新率高,打游戏很流畅",
        "充电速度快,半小时充满",
        "手机信号在电梯里很差",
        "摄像头升级了,人像模式更自然",
        "这个价位的手机性价比很高",
    ],
}


@pytest.mark.slow
def test_a_second_batch_keeps_the_saved_topic_ids(tmp_path):
    """Batch one fits topics and saves them; batch two (reworded copies of batch one's comments)
    is assigned to them, with the state directory or with `topics.model_from` in a fresh run:
    same ids, same labels, no refit."""
    rows = [{"comment_id": f"{theme}{i}", "text": t} for theme, texts in THEMES.items() for i, t in enumerate(texts)]
    day1 = write_jsonl(tmp_path / "day1.jsonl", rows)
    state = tmp_path / "state"
    small = ("topics.min_comments=4", "topics.min_cluster_size=3")
    run([day1], tmp_path / "out1", f"run.state_dir={state}", *small)
    one = pl.read_parquet(tmp_path / "out1" / "comments.parquet")
    assert (state / "topic_model.parquet").exists() and one["topic_id"].max() >= 1
    repeats = [{"comment_id": f"r{i}", "text": r["text"] + "!"} for i, r in enumerate(rows[::3])]
    day2 = write_jsonl(tmp_path / "day2.jsonl", repeats)
    for out, extra in (("out2", f"run.state_dir={state}"), ("out3", f"topics.model_from={state}")):
        manifest = run([day2], tmp_path / out, *small, extra)
        topics_facts = next(s for s in manifest["stages"] if s["name"] == "topics")["facts"]
        assert topics_facts["topic_model"] == "assigned"
        two = pl.read_parquet(tmp_path / out / "comments.parquet")
        before = dict(zip(one["text"].to_list(), one["topic_id"].to_list()))
        for r, got in zip(rows[::3], two["topic_id"].to_list()):
            assert got == before[r["text"]], r["text"]
        labels_one = dict(zip(one["topic_id"].to_list(), one["topic_label"].to_list()))
        assert all(labels_one[t] == lab for t, lab in zip(two["topic_id"].to_list(), two["topic_label"].to_list()))
    refit = run([day2], tmp_path / "out4", f"run.state_dir={state}", "topics.refit=true", *small)
    assert next(s for s in refit["stages"] if s["name"] == "topics")["facts"]["topic_model"] == "fitted"


def test_members_of_a_duplicate_group_share_a_topic(seed_run):
    _, out, _ = seed_run
    t = pl.read_parquet(out / "comments.parquet")
    assert t.group_by("dup_group").agg(pl.col("topic_id").n_unique())["topic_id"].max() == 1


@pytest.mark.slow
def test_hostile_jsonl_every_line_kept_or_quarantined_with_a_reason(tmp_path):
    lines = [
        b'{"comment_id": "g1", "text": "\xe6\xad\xa3\xe5\xb8\xb8\xe7\x9a\x84\xe8\xaf\x84\xe8\xae\xba"}',  # 正常的评论
        b'{"comment_id": "g2", "text": "hello world"}',
        b"not json at all",
        b"[1, 2, 3]",
        b'"just a string"',
        b'{"comment_id": "n1", "text": 666}',  # a number is a real comment: kept as "666"
        b'{"comment_id": "n2", "text": null}',
        b'{"comment_id": "n3", "text": ""}',
        b'{"comment_id": "n4", "text": "   "}',
        b'{"comment_id": "n5", "text": {"nested": 1}}',
        b'{"comment_id": "n6", "body": "no text field"}',
        b'{"comment_id": "u1", "text": "bad \xff\xfe bytes"}',
        b'{"comment_id": "c1", "text": "\\u0000\\u0007\\u200b"}',
        b'{"comment_id": "c2", "text": "ctrl\\u0007 inside a real comment"}',
        b'{"comment_id": "l1", "text": "' + "长".encode() * 50000 + b'"}',
        b'{"comment_id": "d1", "text": "same id once"}',
        b'{"comment_id": "d1", "text": "same id twice"}',
        b"",
        b'{"comment_id": "t1", "text": true}',
        b'{"comment_id": "w1", "text": "crlf line"}\r',
        b'{"comment_id": "e1", "text": "\xf0\x9f\x98\x82\xf0\x9f\x98\x82"}',
        b'{"comment_id": "x1", "text": "truncated json',
    ]
    assert len(lines) == 22
    src = tmp_path / "hostile.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    result = run_cli("run", "--input", str(src), "--output", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    kept = pl.read_parquet(out / "comments.parquet")
    quarantined = pl.read_parquet(out / "quarantine.parquet")
    assert kept.height + quarantined.height == 22
    assert sorted(kept["source_row"].to_list() + quarantined["source_row"].to_list()) == list(range(1, 23))
    assert quarantined["reason"].is_not_null().all() and (quarantined["reason"].str.len_chars() > 0).all()
    assert set(kept["comment_id"]) >= {"g1", "g2", "n1", "c2", "l1", "d1", "d1~2", "w1", "e1"}
    assert kept.filter(pl.col("comment_id") == "l1")["text"].item() == "长" * 50000  # original kept whole
    assert kept.filter(pl.col("comment_id") == "l1")["text_truncated"].item()
    assert kept.filter(pl.col("comment_id") == "d1~2")["id_note"].item().startswith("duplicate comment_id")
    assert set(quarantined["source_row"]) == {3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 18, 19, 22}


@pytest.mark.parametrize("make", ["missing", "random_xlsx"])
def test_unusable_input_file_exits_nonzero_naming_it_without_traceback(tmp_path, make):
    path = tmp_path / ("nope.jsonl" if make == "missing" else "comments.xlsx")
    if make == "random_xlsx":
        path.write_bytes(bytes(range(256)) * 40)
    result = run_cli("run", "--input", str(path), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert str(path) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "comments.parquet").exists()
