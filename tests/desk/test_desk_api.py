"""The desk over its JSON API, as a script, two moderators and an attacker use it: a real server
process on loopback, real tokens from `moderator add`, and the next pipeline run."""

from __future__ import annotations

import shutil
import sqlite3
import threading

import polars as pl
import pytest
from desk_server import Desk, add_moderator, call, make_run, next_run, queue_ids

from conftest import SEED, needs_shared, run_cli

pytestmark = [needs_shared(SEED)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("desk"))


@pytest.fixture
def desk(served, tmp_path):
    """A fresh copy of the state directory per test, and a server on it."""
    src, run, state = served
    state_copy = tmp_path / "state"
    shutil.copytree(state, state_copy)
    with Desk(state_copy, run) as d:
        d.src = src
        yield d


def audit(desk, token, **query):
    status, body = call(desk, "GET", "/api/audit?" + "&".join(f"{k}={v}" for k, v in query.items()), token)
    assert status == 200, body
    return body["entries"]


def test_the_queue_lists_every_flagged_group_once(desk):
    token = add_moderator(desk.state, "ana")
    expected = pl.read_parquet(desk.run / "review" / "queue.parquet")["dup_group"].to_list()
    listed = queue_ids(desk, token)
    assert len(expected) >= 3
    assert listed == expected  # same groups, same order, each once
    status, first = call(desk, "GET", "/api/queue?limit=1", token)
    assert status == 200 and first["total"] == len(expected)
    entry = first["groups"][0]
    assert entry["evidence"] and entry["categories"] and entry["topic_label"] is not None
    status, group = call(desk, "GET", f"/api/groups/{entry['dup_group']}", token)
    assert status == 200 and len(group["members"]) == entry["size"]


def test_filters_narrow_the_queue(desk):
    token = add_moderator(desk.state, "ana")
    queue = pl.read_parquet(desk.run / "review" / "queue.parquet")
    abuse = queue.filter(pl.col("flagged_categories").list.contains("abuse"))["dup_group"].to_list()
    assert queue_ids(desk, token, category="abuse") == abuse
    assert queue_ids(desk, token, search="onerror") == [g for g in queue["dup_group"] if "onerror" in queue_text(queue, g)]


def queue_text(queue, group):
    return queue.filter(pl.col("dup_group") == group)["representative_text"][0].lower()


def test_no_token_a_wrong_token_and_a_revoked_token_get_401_and_write_nothing(desk):
    token = add_moderator(desk.state, "ana")
    revoked = add_moderator(desk.state, "bo")
    assert run_cli("moderator", "revoke", "bo", "--state-dir", str(desk.state)).returncode == 0
    group = queue_ids(desk, token)[0]
    for bad in (None, "not-a-token", revoked, token + "x"):
        for method, path, body in (
            ("GET", "/api/queue", None),
            ("GET", "/api/audit", None),
            ("GET", f"/api/groups/{group}", None),
            ("POST", "/api/decisions", {"dup_group": group, "decision": "remove"}),
            ("POST", "/api/claims", {"dup_group": group}),
        ):
            status, _ = call(desk, method, path, bad, body)
            assert status == 401, (bad, method, path)
    status, page = call(desk, "GET", "/", None)
    assert status == 200 and "Token" in page  # the page redirects to the login form
    assert audit(desk, token) == []


def test_cross_site_requests_are_refused(desk):
    token = add_moderator(desk.state, "ana")
    group = queue_ids(desk, token)[0]
    cookie = {"Cookie": f"desk_token={token}; desk_csrf=abc"}
    # A form on another site: no JSON, no CSRF header, a foreign Origin.
    form = f"dup_group={group}&decision=remove".encode()
    status, _ = call(
        desk,
        "POST",
        "/api/decisions",
        None,
        raw=form,
        headers={**cookie, "Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"},
    )
    assert status == 403
    status, _ = call(desk, "POST", "/api/decisions", None, {"dup_group": group, "decision": "remove"}, headers=cookie)
    assert status == 403  # the cookie alone is not enough
    status, _ = call(
        desk,
        "POST",
        "/api/decisions",
        None,
        {"dup_group": group, "decision": "remove"},
        headers={**cookie, "X-CSRF-Token": "abc", "Origin": "https://evil.example"},
    )
    assert status == 403
    status, _ = call(desk, "POST", "/api/decisions", token, raw=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    assert audit(desk, token) == []
    status, _ = call(
        desk, "POST", "/api/decisions", None, {"dup_group": group, "decision": "remove"}, headers={**cookie, "X-CSRF-Token": "abc"}
    )
    assert status == 200  # the desk's own page: cookie, matching header, no foreign Origin


def test_bad_decisions_are_refused_whole(desk):
    token = add_moderator(desk.state, "ana")
    groups = queue_ids(desk, token)
    status, _ = call(
        desk,
        "POST",
        "/api/decisions",
        token,
        [{"dup_group": groups[0], "decision": "remove"}, {"dup_group": groups[1], "decision": "delete"}],
    )
    assert status == 422
    status, _ = call(desk, "POST", "/api/decisions", token, {"dup_group": "no-such-group", "decision": "remove"})
    assert status == 422
    assert audit(desk, token) == []


def test_two_moderators_deciding_at_once_lose_and_double_nothing(desk):
    names = ("ana", "bo")
    tokens = {n: add_moderator(desk.state, n) for n in names}
    groups = queue_ids(desk, tokens["ana"], decided="all")
    acked: dict[str, list[int]] = {n: [] for n in names}
    errors = []

    def work(name):
        for i in range(60):
            group = groups[(i * 7 + (0 if name == "ana" else 3)) % len(groups)]  # overlapping groups on purpose
            status, body = call(
                desk,
                "POST",
                "/api/decisions",
                tokens[name],
                {"dup_group": group, "decision": ("remove", "approve", "escalate")[i % 3], "note": f"{name} {i}"},
            )
            if status != 200:
                errors.append((status, body))
                continue
            acked[name] += [row["id"] for row in body["recorded"]]

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    entries = audit(desk, tokens["ana"], limit=10000)
    by_id = {e["id"]: e for e in entries}
    assert len(entries) == len(by_id) == 120
    for name in names:
        assert len(acked[name]) == 60
        assert all(by_id[i]["moderator"] == name for i in acked[name])
    # The current decision of each group is its last audit row.
    last = {}
    for e in entries:
        last[e["dup_group"]] = e["decision"]
    decided = queue_ids(desk, tokens["bo"], decided="yes")
    assert set(decided) == set(last)


def test_a_claim_keeps_a_group_for_one_moderator(desk):
    ana, bo = add_moderator(desk.state, "ana"), add_moderator(desk.state, "bo")
    group = queue_ids(desk, ana)[0]
    status, body = call(desk, "POST", "/api/claims", ana, {"dup_group": group})
    assert status == 200 and body["granted"]
    status, body = call(desk, "POST", "/api/claims", bo, {"dup_group": group})
    assert status == 409 and body["held_by"] == "ana"
    status, page = call(desk, "GET", "/api/queue?limit=500", bo)
    assert {g["dup_group"]: g["claimed_by"] for g in page["groups"]}[group] == "ana"


def test_kill_9_in_a_stream_of_decisions_loses_nothing_acknowledged(desk):
    token = add_moderator(desk.state, "ana")
    groups = queue_ids(desk, token)
    acked, stop = [], threading.Event()

    def stream():
        i = 0
        while not stop.is_set():
            try:
                status, body = call(
                    desk, "POST", "/api/decisions", token, {"dup_group": groups[i % len(groups)], "decision": "remove", "note": str(i)}
                )
            except OSError:
                return  # the server is gone: this request was never acknowledged
            if status == 200:
                acked.append(body["recorded"][0]["id"])
            i += 1

    worker = threading.Thread(target=stream)
    worker.start()
    while len(acked) < 40:
        threading.Event().wait(0.02)
    desk.kill()
    stop.set()
    worker.join(timeout=60)
    db = sqlite3.connect(desk.state / "desk.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    desk.start()
    ids = {e["id"] for e in audit(desk, token, limit=10000)}
    assert set(acked) <= ids


def test_the_next_run_applies_desk_decisions_to_every_member_and_undo_sticks(desk, tmp_path):
    token = add_moderator(desk.state, "ana")
    queue = pl.read_parquet(desk.run / "review" / "queue.parquet")
    biggest = queue.sort("dup_group_size", descending=True)["dup_group"][0]
    others = [g for g in queue["dup_group"] if g != biggest][:2]
    for group, decision in ((biggest, "remove"), (others[0], "approve"), (others[1], "escalate")):
        assert call(desk, "POST", "/api/decisions", token, {"dup_group": group, "decision": decision, "note": "checked"})[0] == 200
    assert call(desk, "POST", "/api/decisions", token, {"dup_group": others[1], "decision": "undo"})[0] == 200
    desk.stop()

    out = tmp_path / "next"
    next_run(desk.src, out, desk.state)
    comments = pl.read_parquet(out / "comments.parquet")
    members = comments.filter(pl.col("dup_group") == biggest)
    assert members.height == queue.filter(pl.col("dup_group") == biggest)["dup_group_size"][0]
    assert members["decision"].to_list() == ["remove"] * members.height
    assert set(comments.filter(pl.col("dup_group") == others[0])["decision"]) == {"approve"}
    assert comments.filter(pl.col("dup_group") == others[1])["decision"].null_count() > 0  # undone
    next_queue = pl.read_parquet(out / "review" / "queue.parquet")["dup_group"].to_list()
    assert biggest not in next_queue and others[0] not in next_queue and others[1] in next_queue


def test_a_decisions_file_is_recorded_as_an_import(desk, tmp_path):
    token = add_moderator(desk.state, "ana")
    group = queue_ids(desk, token)[0]
    desk.stop()
    file = tmp_path / "decisions.csv"
    file.write_text(f"dup_group,decision,note\n{group},remove,from a spreadsheet\n", encoding="utf-8")
    out = tmp_path / "next"
    next_run(desk.src, out, desk.state, file)
    next_run(desk.src, out, desk.state, file)  # twice: recorded once
    desk.start()
    entries = audit(desk, token)
    assert [(e["dup_group"], e["decision"], e["source"]) for e in entries] == [(group, "remove", "import:decisions.csv")]
    assert set(pl.read_parquet(out / "comments.parquet").filter(pl.col("dup_group") == group)["decision"]) == {"remove"}
