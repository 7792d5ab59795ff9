"""The review page as a moderator meets it: opened in headless Chromium (Debian's chromium and
chromedriver; skipped when absent), and decisions that change the next run."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from conftest import SAMPLE, browser, run_pipeline, write_jsonl

run = run_pipeline


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "out"
    run([SAMPLE], out)
    return out


@pytest.mark.slow
def test_page_lists_every_queued_group_filters_and_has_no_console_errors(sample_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    queue = pl.read_parquet(sample_run / "review" / "queue.parquet")
    assert queue.height >= 2
    page = sample_run / "review" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert "http://" not in html.split("<script>")[0] and "<script src=" not in html  # nothing fetched
    driver = browser()
    try:
        driver.get(page.as_uri())
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait

        # A loaded machine can take seconds to parse the inlined plotly.js and draw.
        WebDriverWait(driver, 60).until(
            EC.presence_of_element_located((By.CSS_SELECTOR, ".entry")),
            message=f"no queue entry rendered; console: {driver.get_log('browser')}",
        )
        entries = driver.find_elements(By.CSS_SELECTOR, ".entry")
        assert sorted(e.get_attribute("data-group") for e in entries) == sorted(queue["dup_group"].to_list())
        assert len(driver.find_elements(By.CSS_SELECTOR, ".plot .main-svg")) >= 4  # plotly drew the plots
        sizes = dict(zip(queue["dup_group"], queue["dup_group_size"]))
        for e in entries:
            assert f"{sizes[e.get_attribute('data-group')]} comment" in e.text
        category = queue["flagged_categories"][0][0]
        Select(driver.find_element(By.ID, "f-cat")).select_by_value(category)
        shown = driver.find_elements(By.CSS_SELECTOR, ".entry")
        assert shown and all(category in e.get_attribute("data-categories").split() for e in shown)
        expected = sum(category in cats for cats in queue["flagged_categories"].to_list())
        assert len(shown) == expected
        driver.save_screenshot(str(tmp_path / "review_page.png"))
        shutil.copy(tmp_path / "review_page.png", sample_run / "review" / "screenshot.png")
        errors = [m for m in driver.get_log("browser") if m["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


@pytest.mark.slow
def test_report_command_rebuilds_the_page_without_recomputing(sample_run):
    from conftest import run_cli

    page = sample_run / "review" / "index.html"
    page.unlink()
    before = (sample_run / "_stages" / "topics.json").stat().st_mtime
    result = run_cli("report", str(sample_run))
    assert result.returncode == 0, result.stderr
    assert page.exists() and (sample_run / "_stages" / "topics.json").stat().st_mtime == before


@pytest.mark.slow
def test_decisions_apply_to_groups_now_and_in_later_batches(tmp_path):
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    day1 = write_jsonl(tmp_path / "day1.jsonl", rows)
    state = tmp_path / "state"
    run([day1], tmp_path / "out1", f"run.state_dir={state}")
    queue = pl.read_parquet(tmp_path / "out1" / "review" / "queue.parquet")
    assert queue.height >= 2
    removed, approved = queue["dup_group"][0], queue["dup_group"][1]
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(
        "dup_group,decision,note,decided_at\n"
        f"{removed},remove,spam campaign,2026-11-26T01:00:00Z\n"
        f"{approved},approve,,2026-11-26T01:01:00Z\n",
        encoding="utf-8",
    )
    run([day1], tmp_path / "out2", f"run.state_dir={state}", decisions=decisions)
    comments = pl.read_parquet(tmp_path / "out2" / "comments.parquet")
    queue2 = pl.read_parquet(tmp_path / "out2" / "review" / "queue.parquet")
    assert removed not in queue2["dup_group"].to_list() and approved not in queue2["dup_group"].to_list()
    assert queue2.height == queue.height - 2
    decided = comments.filter(pl.col("dup_group") == removed)
    assert decided["decision"].to_list() == ["remove"] * decided.height
    assert decided["decision_note"][0] == "spam campaign" and decided["decided_at"][0] == "2026-11-26T01:00:00Z"
    assert set(comments.filter(pl.col("dup_group") == approved)["decision"]) == {"approve"}
    # A new batch whose comment copies a removed group's text joins it and inherits the decision,
    # without the decisions file: the state directory keeps it.
    member_text = comments.filter(pl.col("dup_group") == removed)["text"][0]
    day2 = write_jsonl(
        tmp_path / "day2.jsonl",
        [{"comment_id": "new1", "text": member_text + "!!"}, {"comment_id": "new2", "text": "今天天气很好,出去走走"}],
    )
    run([day2], tmp_path / "out3", f"run.state_dir={state}")
    new = pl.read_parquet(tmp_path / "out3" / "comments.parquet")
    assert new.filter(pl.col("comment_id") == "new1")["dup_group"].item() == removed
    assert new.filter(pl.col("comment_id") == "new1")["decision"].item() == "remove"
    assert removed not in pl.read_parquet(tmp_path / "out3" / "review" / "queue.parquet")["dup_group"].to_list()
    assert new.filter(pl.col("comment_id") == "new2")["decision"].item() is None


@pytest.mark.slow
def test_a_bad_decisions_file_names_the_row(tmp_path):
    from conftest import run_cli

    bad = tmp_path / "d.csv"
    bad.write_text("dup_group,decision\nabc,delete\n", encoding="utf-8")
    result = run_cli("run", "--input", str(SAMPLE), "--output", str(tmp_path / "out"), "--decisions", str(bad), "--quiet")
    assert result.returncode == 2 and "row 2" in result.stderr and "delete" in result.stderr


@pytest.mark.slow
def test_campaign_and_spam_entries_show_their_badges_filter_and_the_campaign_timeline(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from pipeline.config import PROJECT_ROOT

    pushed = "这家公司的新品真的太好用了，大家赶紧去官网抢购吧，错过就没了"
    rows = [
        {"comment_id": f"c{i}", "text": pushed + "!" * (i % 3), "thread_id": f"t{i % 6}", "created_at": f"2024-05-01 20:{i * 3:02d}"}
        for i in range(12)
    ]
    rows.append({"comment_id": "ad", "text": "兼职刷单日结，加微信 shua8866 了解", "thread_id": "t1", "created_at": "2024-05-01 21:00"})
    rows += [
        {"comment_id": f"o{i}", "text": t, "thread_id": "t2"} for i, t in enumerate(["今天天气不错", "这个价格有点贵", "支持一下作者"])
    ]
    out = tmp_path / "run"
    run([write_jsonl(tmp_path / "in.jsonl", rows)], out, config=PROJECT_ROOT / "configs" / "fast.yaml")
    queue = pl.read_parquet(out / "review" / "queue.parquet")
    assert {"campaign", "spam"} <= {c for cats in queue["flagged_categories"].to_list() for c in cats}
    driver = browser()
    try:
        driver.get((out / "review" / "index.html").as_uri())
        WebDriverWait(driver, 60).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".entry")))
        assert driver.find_elements(By.CSS_SELECTOR, "#plot-campaign_timeline .main-svg")  # the timeline was drawn
        Select(driver.find_element(By.ID, "f-cat")).select_by_value("campaign")
        shown = driver.find_elements(By.CSS_SELECTOR, ".entry")
        assert len(shown) == 1 and "campaign" in shown[0].find_element(By.CSS_SELECTOR, ".badge.campaign").text
        assert "12 copies in 6 threads" in shown[0].text
        Select(driver.find_element(By.ID, "f-cat")).select_by_value("spam")
        shown = driver.find_elements(By.CSS_SELECTOR, ".entry")
        assert len(shown) == 1 and "shua8866" in shown[0].text
        assert not [m for m in driver.get_log("browser") if m["level"] == "SEVERE"]
    finally:
        driver.quit()
