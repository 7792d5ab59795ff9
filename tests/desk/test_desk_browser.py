"""The desk in a real browser (Debian's chromium through selenium; skipped when absent): a moderator
logs in, moves with the keys, decides three groups, and the next run applies them. Hostile
comment text is shown as text and runs nothing."""

from __future__ import annotations

import time

import polars as pl
import pytest
from desk_server import HOSTILE, Desk, add_moderator, call, make_run, next_run

from conftest import SEED, browser, needs_shared

pytestmark = [pytest.mark.slow, needs_shared(SEED)]


def wait_for(condition, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the page")


def test_a_moderator_logs_in_decides_three_groups_by_key_and_the_next_run_applies_them(tmp_path):
    from selenium.webdriver.common.by import By

    src, run, state = make_run(tmp_path)
    token = add_moderator(state, "ana")
    queue = pl.read_parquet(run / "review" / "queue.parquet")
    driver = browser()
    try:
        with Desk(state, run) as desk:
            driver.get(desk.url + "/")
            assert driver.current_url.endswith("/login")
            driver.find_element(By.ID, "token").send_keys(token)
            driver.find_element(By.ID, "login").click()
            wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#queue .entry.current"))
            assert driver.find_element(By.ID, "me").text == "ana"

            # Hostile text is on the page, as text; nothing it carries ran.
            texts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#queue .entry .text")]
            hostile = [t for t in texts if "<script>" in t or "onerror" in t]
            assert len(hostile) == len(HOSTILE), texts[:5]
            assert driver.execute_script("return window.__pwned === undefined")
            assert not driver.find_elements(By.CSS_SELECTOR, "#queue img, #queue script")

            body = driver.find_element(By.TAG_NAME, "body")
            body.send_keys("?")
            assert driver.find_element(By.ID, "help").is_displayed()
            body.send_keys("?")

            # Read in one script call: the page re-renders the list after each decision.
            def current():
                return driver.execute_script("const e = document.querySelector('#queue .entry.current'); return e && e.dataset.group")

            def listed():
                return driver.execute_script("return [...document.querySelectorAll('#queue .entry')].map(e => e.dataset.group)")

            first = current()
            body.send_keys("j")
            wait_for(lambda: current() != first)
            body.send_keys("k")
            wait_for(lambda: current() == first)
            decided = []
            for key in ("r", "a", "e"):
                group = current()
                body.send_keys("j")  # move on, then back: the keys move the cursor
                body.send_keys("k")
                wait_for(lambda g=group: current() == g)
                body.send_keys(key)
                wait_for(lambda g=group: g not in listed())
                decided.append(group)
            body.send_keys("z")
            assert "zen" in body.get_attribute("class")
            shown = "return [...document.querySelectorAll('#queue .entry')].filter(e => e.offsetParent !== null).length"
            assert driver.execute_script(shown) == 1

            status, audit = call(desk, "GET", "/api/audit", token)
            assert [(e["dup_group"], e["decision"], e["moderator"]) for e in audit["entries"]] == list(
                zip(decided, ("remove", "approve", "escalate"), ["ana"] * 3)
            )
            errors = [m for m in driver.get_log("browser") if m["level"] == "SEVERE"]
            assert not errors, errors
    finally:
        driver.quit()

    out = tmp_path / "next"
    next_run(src, out, state)
    comments = pl.read_parquet(out / "comments.parquet")
    for group, decision in zip(decided, ("remove", "approve", "escalate")):
        size = queue.filter(pl.col("dup_group") == group)["dup_group_size"][0]
        assert comments.filter(pl.col("dup_group") == group)["decision"].to_list() == [decision] * size
    assert not set(decided) & set(pl.read_parquet(out / "review" / "queue.parquet")["dup_group"])
