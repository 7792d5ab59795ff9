"""End to end, on the real models: the seed thread, the bundled sample, mixed inputs, bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from conftest import PROJECT, SEED, needs_shared, run_cli, seed_comments, write_jsonl
from pipeline.config import load_config
from pipeline.runner import Runner
from pipeline.stages.export import CONTRACT

SAMPLE = PROJECT / "samples" / "comments.jsonl"


def run(inputs: list[Path], out: Path, *overrides: str) -> dict:
    return Runner(inputs, out, load_config(None, ["run.progress=false", *overrides])).run()


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    if not SEED.exists():
        pytest.skip(f"needs ../shared data: {SEED} is absent")
    tmp = tmp_path_factory.mktemp("seed")
    src = write_jsonl(tmp / "seed.jsonl", [{"comment_id": f"c{n:02d}", "text": t}
                                            for n, t in enumerate(seed_comments(), 1)])
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
    assert [s["name"] for s in m["stages"]] == ["ingest", "embed", "dedup", "topics", "flag", "export"]
    assert all({"name", "status", "rows_in", "rows_out", "seconds"} <= set(s) for s in m["stages"])
    assert m["inputs"][0]["path"] == str(src) and len(m["inputs"][0]["sha256"]) == 64
    assert m["config"]["dedup"]["shingle_size"] == 2 and m["models"]["embedding"]
    assert not (out / "quarantine.parquet").exists()
    assert not list(out.rglob("*.tmp"))


def test_rerun_reuses_stages_and_a_topic_change_reruns_only_topics(seed_run, tmp_path):
    src, _, _ = seed_run
    out = tmp_path / "run"
    first = run([src], out)
    before = pl.read_parquet(out / "comments.parquet")
    again = run([src], out)
    assert {s["name"]: s["status"] for s in again["stages"][:-1]} == dict.fromkeys(
        ["ingest", "embed", "dedup", "topics", "flag"], "cached")
    assert pl.read_parquet(out / "comments.parquet").equals(before)
    changed = run([src], out, "topics.min_cluster_size=6")
    status = {s["name"]: s["status"] for s in changed["stages"]}
    assert status == {"ingest": "cached", "embed": "cached", "dedup": "cached", "topics": "ran",
                      "flag": "cached", "export": "ran"}
    threshold = run([src], out, "topics.min_cluster_size=6", "flag.threshold_abuse=0.3")
    status = {s["name"]: s["status"] for s in threshold["stages"]}
    assert status == {"ingest": "cached", "embed": "cached", "dedup": "cached", "topics": "cached",
                      "flag": "ran", "export": "ran"}
    assert first["stages"][1]["facts"]["distinct_texts"] == 78  # 13 and 18 differ by a character


def test_topics_are_reproducible_across_processes(seed_run, tmp_path):
    src, out, _ = seed_run
    other = tmp_path / "again"
    result = run_cli("run", "--input", str(src), "--output", str(other), "--quiet")
    assert result.returncode == 0, result.stderr
    a, b = (pl.read_parquet(d / "comments.parquet") for d in (out, other))
    assert a["topic_id"].to_list() == b["topic_id"].to_list()
    assert a["dup_group"].to_list() == b["dup_group"].to_list()


def test_bundled_sample_several_formats_and_generated_ids(tmp_path):
    thread = tmp_path / "thread.txt"
    thread.write_text("一篇文章的正文。\n![](http://example.com/x.jpg)\n文章评论一\n文章评论二\n", encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"comment_id": "b1", "text": "ok"}\n{oops\n{"comment_id": "b3", "text": ""}\n'
                    b'{"comment_id": "b1", "text": "same id again"}\n')
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


def test_state_dir_carries_groups_to_the_next_batch(tmp_path):
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    day1 = write_jsonl(tmp_path / "day1.jsonl", rows[:20])
    # Day two: new comments plus fresh copies of day one's ad campaign, one with another homophone.
    day2 = write_jsonl(tmp_path / "day2.jsonl", rows[20:] + [
        {"comment_id": "n1", "text": "兼职日结,在家动动手指月入过万,加威信了解"},
        {"comment_id": "n2", "text": "兼 职 日 结,在家动动手指月入过万,加vx了解"}])
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


def test_a_run_killed_with_sigkill_leaves_readable_files_and_the_next_run_finishes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--input", str(SAMPLE), "--output", str(out)],
                            cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
