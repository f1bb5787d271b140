"""The default store: feedback and audit events in one SQLite file (`<state_dir>/cds.sqlite3`, or the
file CDS_DATABASE_URL=sqlite:///path names)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from cds import jsontext
from cds.errors import StoreUnavailable
from cds.store.audit_queue import AuditQueue

__all__ = ["SqliteStore", "suggestions_key"]

log = logging.getLogger("cds.store")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    service_id TEXT NOT NULL,
    card TEXT NOT NULL,
    outcome TEXT NOT NULL,
    outcome_timestamp TEXT NOT NULL,
    accepted_suggestions TEXT,
    override_reason TEXT,
    received_at TEXT NOT NULL,
    suggestions_key TEXT NOT NULL DEFAULT '[]',
    UNIQUE (service_id, card, outcome, outcome_timestamp, suggestions_key)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    event TEXT NOT NULL
);
"""


_FEEDBACK_COLUMNS = (
    "service_id, card, outcome, outcome_timestamp, accepted_suggestions, override_reason, received_at,"
    " suggestions_key"
)


def suggestions_key(item: dict[str, Any]) -> str:
    """The accepted suggestion ids of a feedback item, distinct and sorted, as a JSON array ('[]': none)."""
    accepted = item.get("acceptedSuggestions") or []
    ids = {str(s.get("id")) if isinstance(s, dict) else str(s) for s in accepted}
    return json.dumps(sorted(ids), separators=(",", ":"))


def _migrate_sqlite(conn: sqlite3.Connection) -> None:
    """user_version 1: the feedback key gains the accepted suggestion ids (the table is rebuilt once,
    under a write lock, so several workers opening one file migrate it once)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= 1:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(feedback)")}
        if "suggestions_key" not in columns:  # a table made before version 1
            conn.execute("ALTER TABLE feedback RENAME TO feedback_v0")
            conn.execute(_SCHEMA.split(";")[0])  # the current CREATE TABLE feedback
            rows = conn.execute(
                "SELECT service_id, card, outcome, outcome_timestamp, accepted_suggestions, override_reason,"
                " received_at FROM feedback_v0 ORDER BY id"
            ).fetchall()
            conn.executemany(
                f"INSERT OR IGNORE INTO feedback ({_FEEDBACK_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                [
                    (*r, suggestions_key({"acceptedSuggestions": json.loads(r[4]) if r[4] else []}))
                    for r in rows
                ],
            )
            conn.execute("DROP TABLE feedback_v0")
        conn.execute("PRAGMA user_version = 1")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_AUDIT_ROWS_PER_INSERT = 250  # 500 parameters: far under SQLite's limit (999 before 3.32)


def _audit_insert(rows: int) -> str:
    return "INSERT INTO audit (at, event) VALUES " + ",".join(["(?, ?)"] * rows)


class SqliteStore:
    """One connection per process, used under a lock from worker threads (asyncio.to_thread).

    WAL + synchronous=FULL: `add_feedback` returns only after the commit is on disk, so an
    acknowledged feedback survives SIGKILL. Audit events go through an AuditQueue.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        audit_flush_s: float = 0.5,
        audit_queue_max: int = 10_000,
        shutdown_timeout_s: float = 10.0,
    ) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._shutdown_timeout_s = shutdown_timeout_s
        # OperationalError: locked past busy_timeout, disk full or unreadable: kept and retried
        self._audit: AuditQueue[tuple[str, str]] = AuditQueue(
            lambda batch: asyncio.to_thread(self._write_audit, batch),
            audit_flush_s,
            (sqlite3.OperationalError,),
            max_rows=audit_queue_max,
        )

    # -- lifecycle
    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.executescript(_SCHEMA)
        _migrate_sqlite(conn)
        self._conn = conn

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self._audit.start()

    async def close(self) -> None:
        await self._audit.close(self._shutdown_timeout_s)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def ping(self) -> bool:
        def _ping() -> bool:
            with self._lock:
                if self._conn is None:
                    return False
                return bool(self._conn.execute("SELECT 1").fetchone() == (1,))

        try:
            return await asyncio.to_thread(_ping)
        except sqlite3.Error:
            return False

    # -- feedback
    def _insert_feedback(self, service_id: str, items: list[dict[str, Any]]) -> int:
        rows = [
            (
                service_id,
                str(i["card"]),
                i["outcome"],
                i["outcomeTimestamp"],
                json.dumps(i.get("acceptedSuggestions")) if i.get("acceptedSuggestions") else None,
                json.dumps(i.get("overrideReason")) if i.get("overrideReason") else None,
                _utc_now(),
                suggestions_key(i),
            )
            for i in items
        ]
        with self._lock:
            conn = self._require()
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(
                    f"INSERT OR IGNORE INTO feedback ({_FEEDBACK_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", rows
                )
                added = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return added

    async def add_feedback(self, service_id: str, items: list[dict[str, Any]]) -> int:
        try:
            return await asyncio.to_thread(self._insert_feedback, service_id, items)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None

    async def feedback(self) -> list[dict[str, Any]]:
        def _read() -> list[dict[str, Any]]:
            with self._lock:
                cur = self._require().execute(
                    "SELECT service_id, card, outcome, outcome_timestamp, accepted_suggestions,"
                    " override_reason, received_at FROM feedback ORDER BY id"
                )
                return [
                    {
                        "service_id": r[0],
                        "card": r[1],
                        "outcome": r[2],
                        "outcomeTimestamp": r[3],
                        "acceptedSuggestions": json.loads(r[4]) if r[4] else [],
                        "overrideReason": json.loads(r[5]) if r[5] else None,
                        "received_at": r[6],
                    }
                    for r in cur.fetchall()
                ]

        try:
            return await asyncio.to_thread(_read)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None

    # -- audit
    async def add_audit(self, event: dict[str, Any]) -> None:
        self._audit.add((str(event.get("time") or _utc_now()), jsontext.dumps(event)))

    def _write_audit(self, batch: list[tuple[str, str]]) -> None:
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                # One statement per chunk, not executemany: every row of executemany is a separate
                # sqlite3_step that gives up and re-takes the GIL, and each re-take waits for the busy
                # event loop (measured: ~40 µs of sys time per hook call in this thread).
                for i in range(0, len(batch), _AUDIT_ROWS_PER_INSERT):
                    chunk = batch[i : i + _AUDIT_ROWS_PER_INSERT]
                    conn.execute(_audit_insert(len(chunk)), [v for row in chunk for v in row])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        def _read() -> list[dict[str, Any]]:
            with self._lock:
                cur = self._require().execute("SELECT event FROM audit ORDER BY id DESC LIMIT ?", (limit,))
                return [json.loads(r[0]) for r in cur.fetchall()]

        try:
            await self._audit.flush()
            return await asyncio.to_thread(_read)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None

    async def durability(self) -> tuple[str, int]:
        """(journal_mode, synchronous) of the open connection: ("wal", 2) is WAL with synchronous=FULL."""

        def _read() -> tuple[str, int]:
            with self._lock:
                conn = self._require()
                return (
                    str(conn.execute("PRAGMA journal_mode").fetchone()[0]),
                    int(conn.execute("PRAGMA synchronous").fetchone()[0]),
                )

        return await asyncio.to_thread(_read)

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is not started")
        return self._conn


def _unavailable(exc: BaseException) -> StoreUnavailable:
    """A database fault, logged by class (its text may quote a row) and answered 503."""
    log.error("database unavailable: %s", type(exc).__name__)
    return StoreUnavailable()
