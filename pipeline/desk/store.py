"""The desk's state: moderators, decisions and the audit log, in one SQLite file (desk.sqlite) in
the state directory.

Every decision is one transaction: an append-only audit row (who, which group, what, note, the
decision it replaced, when, from where) and the group's current decision. WAL mode with
synchronous=FULL: a decision the server has acknowledged survives a kill -9 or a power cut.
The audit table refuses UPDATE and DELETE (triggers), so history cannot be rewritten through SQL
either. Tokens are stored as sha256 hashes only (they are random 256-bit strings, so a salted slow
hash adds nothing).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import sqlite3
import threading
from pathlib import Path

import polars as pl

from pipeline.io.decisions import DECISIONS, SCHEMA, STATE_NAME

DB_NAME = "desk.sqlite"
UNDO = "undo"
CLAIM_SECONDS = 300  # a claim lapses after five minutes unless renewed by the moderator's page

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS moderators (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    moderator TEXT NOT NULL,
    dup_group TEXT NOT NULL,
    decision TEXT NOT NULL,
    note TEXT,
    previous TEXT,
    previous_audit_id INTEGER,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_group ON audit (dup_group);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS decisions (
    dup_group TEXT PRIMARY KEY,
    decision TEXT NOT NULL,
    note TEXT,
    moderator TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    audit_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    dup_group TEXT PRIMARY KEY,
    moderator TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class DeskError(ValueError):
    """A request the desk refuses (unknown decision, unknown moderator, ...): the message says why."""


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class DeskStore:
    """One per process; each thread gets its own connection (sqlite3 connections are per thread)."""

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / DB_NAME
        self._local = threading.local()
        self._db().executescript(_SCHEMA_SQL)  # its own transaction (executescript commits first)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self):
                self.db = store._db()
                self.db.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks
                return self.db

            def __exit__(self, kind, *_):
                self.db.execute("COMMIT" if kind is None else "ROLLBACK")

        return _Tx()

    # Moderators -----------------------------------------------------------------------------------

    def add_moderator(self, name: str) -> str:
        name = name.strip()
        if not name or len(name) > 64 or any(c in name for c in "\n\r\t"):
            raise DeskError(f"moderator name {name!r}: use 1-64 characters, no tabs or newlines")
        token = secrets.token_urlsafe(32)
        with self._tx() as db:
            row = db.execute("SELECT revoked_at FROM moderators WHERE name = ?", (name,)).fetchone()
            if row is not None and row["revoked_at"] is None:
                raise DeskError(f"moderator {name!r} exists; `moderator revoke {name}` first to issue a new token")
            db.execute(
                "INSERT OR REPLACE INTO moderators (name, token_hash, created_at, revoked_at) VALUES (?, ?, ?, NULL)",
                (name, token_hash(token), now_iso()),
            )
        return token

    def revoke_moderator(self, name: str) -> None:
        with self._tx() as db:
            changed = db.execute("UPDATE moderators SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now_iso(), name)).rowcount
            db.execute("DELETE FROM claims WHERE moderator = ?", (name,))
        if not changed:
            raise DeskError(f"no active moderator {name!r}; `moderator list` shows them")

    def moderators(self) -> list[dict]:
        rows = self._db().execute("SELECT name, created_at, revoked_at FROM moderators ORDER BY name").fetchall()
        return [dict(r) for r in rows]

    def moderator_for(self, token: str | None) -> str | None:
        """The active moderator holding `token`, or None."""
        if not token:
            return None
        row = self._db().execute("SELECT name FROM moderators WHERE token_hash = ? AND revoked_at IS NULL", (token_hash(token),)).fetchone()
        return None if row is None else row["name"]

    # Decisions ------------------------------------------------------------------------------------

    def record_many(self, moderator: str, items: list[dict], source: str = "desk") -> list[dict]:
        """A bulk action: all in one transaction, or none (a bad item refuses the whole list)."""
        checked = []
        for n, item in enumerate(items):
            decision = str(item.get("decision") or "").strip().lower()
            group = str(item.get("dup_group") or "").strip()
            if decision not in (*DECISIONS, UNDO) or not group:
                raise DeskError(f"item {n}: needs a dup_group and a decision among {', '.join((*DECISIONS, UNDO))}")
            note = item.get("note")
            checked.append((group, decision, None if note is None else str(note)[:2000]))
        with self._tx() as db:
            return [self._record(db, moderator, g, d, note, source) for g, d, note in checked]

    def _record(
        self,
        db: sqlite3.Connection,
        moderator: str,
        group: str,
        decision: str,
        note: str | None,
        source: str,
        decided_at: str | None = None,
    ) -> dict:
        at = now_iso()  # when the desk recorded it; an import keeps its file's decided_at as the decision's time
        current = db.execute("SELECT decision, audit_id FROM decisions WHERE dup_group = ?", (group,)).fetchone()
        previous = None if current is None else current["decision"]
        previous_id = None if current is None else current["audit_id"]
        cur = db.execute(
            "INSERT INTO audit (at, moderator, dup_group, decision, note, previous, previous_audit_id, source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (at, moderator, group, decision, note, previous, previous_id, source),
        )
        audit_id = cur.lastrowid
        if decision == UNDO:
            # Back to the decision the current one replaced (or to undecided): the audit log is the stack.
            before = None
            if previous_id is not None:
                replaced = db.execute("SELECT previous_audit_id FROM audit WHERE id = ?", (previous_id,)).fetchone()["previous_audit_id"]
                if replaced is not None:
                    before = db.execute("SELECT * FROM audit WHERE id = ?", (replaced,)).fetchone()
            if before is None:
                db.execute("DELETE FROM decisions WHERE dup_group = ?", (group,))
            else:
                db.execute(
                    "UPDATE decisions SET decision = ?, note = ?, moderator = ?, decided_at = ?, audit_id = ? WHERE dup_group = ?",
                    (before["decision"], before["note"], before["moderator"], before["at"], before["id"], group),
                )
        else:
            db.execute(
                "INSERT INTO decisions (dup_group, decision, note, moderator, decided_at, audit_id) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (dup_group) DO UPDATE SET decision = excluded.decision, note = excluded.note,"
                " moderator = excluded.moderator, decided_at = excluded.decided_at, audit_id = excluded.audit_id",
                (group, decision, note, moderator, decided_at or at, audit_id),
            )
        return {
            "id": audit_id,
            "at": at,
            "moderator": moderator,
            "dup_group": group,
            "decision": decision,
            "note": note,
            "previous": previous,
        }

    def current(self, groups: list[str]) -> dict[str, dict]:
        """Current decision of each named group that has one."""
        rows = []
        for i in range(0, len(groups), 500):  # SQLite caps the parameters of one statement
            part = groups[i : i + 500]
            rows += self._db().execute(f"SELECT * FROM decisions WHERE dup_group IN ({','.join('?' * len(part))})", part).fetchall()
        return {r["dup_group"]: dict(r) for r in rows}

    def decided_groups(self) -> set[str]:
        return {r[0] for r in self._db().execute("SELECT dup_group FROM decisions").fetchall()}

    def current_decisions(self) -> pl.DataFrame:
        """The current decisions in the shape the runner applies (pipeline.io.decisions.SCHEMA)."""
        rows = self._db().execute("SELECT dup_group, decision, note AS decision_note, decided_at FROM decisions ORDER BY dup_group")
        return pl.DataFrame([dict(r) for r in rows.fetchall()], schema=SCHEMA)

    def import_decisions(self, table: pl.DataFrame, source: str) -> int:
        """Decisions from a file (--decisions, or the state's decisions.parquet), recorded in the
        audit log with source `import:NAME`. Rows equal to the group's current decision, or older
        than it, are skipped, so importing the same file twice changes nothing. Returns how many
        were recorded."""
        with self._tx() as db:
            n = 0
            for row in table.iter_rows(named=True):
                current = db.execute("SELECT decision, note, decided_at FROM decisions WHERE dup_group = ?", (row["dup_group"],)).fetchone()
                if current is not None and (
                    (current["decision"], current["note"]) == (row["decision"], row["decision_note"])
                    or str(row["decided_at"]) < current["decided_at"]  # the latest decision on a group wins (ISO times)
                ):
                    continue
                self._record(db, "import", row["dup_group"], row["decision"], row["decision_note"], f"import:{source}", row["decided_at"])
                n += 1
            return n

    def audit(self, dup_group: str | None = None, moderator: str | None = None, after_id: int = 0, limit: int = 1000) -> list[dict]:
        sql, args = "SELECT * FROM audit WHERE id > ?", [after_id]
        if dup_group:
            sql, args = sql + " AND dup_group = ?", [*args, dup_group]
        if moderator:
            sql, args = sql + " AND moderator = ?", [*args, moderator]
        rows = self._db().execute(sql + " ORDER BY id LIMIT ?", [*args, max(1, min(limit, 10_000))]).fetchall()
        return [dict(r) for r in rows]

    def meta(self, key: str) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # Claims ---------------------------------------------------------------------------------------

    def claim(self, moderator: str, dup_group: str, now: float) -> dict:
        """Claim a group for CLAIM_SECONDS; refused (holder returned) while another moderator holds it."""
        with self._tx() as db:
            row = db.execute("SELECT moderator, expires_at FROM claims WHERE dup_group = ?", (dup_group,)).fetchone()
            if row is not None and row["moderator"] != moderator and row["expires_at"] > now:
                return {"dup_group": dup_group, "held_by": row["moderator"], "expires_at": row["expires_at"], "granted": False}
            db.execute("DELETE FROM claims WHERE moderator = ? AND dup_group != ?", (moderator, dup_group))  # one open group each
            db.execute(
                "INSERT OR REPLACE INTO claims (dup_group, moderator, expires_at) VALUES (?, ?, ?)",
                (dup_group, moderator, now + CLAIM_SECONDS),
            )
            return {"dup_group": dup_group, "held_by": moderator, "expires_at": now + CLAIM_SECONDS, "granted": True}

    def claims(self, now: float) -> dict[str, str]:
        rows = self._db().execute("SELECT dup_group, moderator FROM claims WHERE expires_at > ?", (now,)).fetchall()
        return {r["dup_group"]: r["moderator"] for r in rows}


def decisions_for_run(state_dir: Path, new: pl.DataFrame | None, source: str) -> pl.DataFrame:
    """What `run --state-dir` applies: the desk's current decisions, after recording into its audit
    log the --decisions file (`new`) and, once, the decisions.parquet that state directories kept
    before the desk existed. The database is then the one record: an undo at the desk sticks."""
    desk = DeskStore(state_dir)
    saved = state_dir / f"{STATE_NAME}.parquet"
    if desk.meta("state_parquet_imported") is None:
        if saved.exists():
            desk.import_decisions(pl.read_parquet(saved), saved.name)
        desk.set_meta("state_parquet_imported", now_iso())
    if new is not None and new.height:
        desk.import_decisions(new, source)
    return desk.current_decisions()
