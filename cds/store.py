"""Durable state: feedback and audit events. SQLite by default; PostgreSQL when CDS_DATABASE_URL names it.

CONTRACT (the service work implements SQLite; the deployment work adds PostgreSQL):
    open_store(settings) -> Store
    Store.start() (creates/migrates schema), close(), ping() -> bool
    Store.add_feedback(service_id, items: list[dict]) -> int   new rows; idempotent on
        (service_id, card, outcome, outcomeTimestamp, accepted suggestion ids sorted), so two
        suggestions of one card accepted in the same second are two rows and a repeat is none;
        returns only after the rows are durable
    Store.feedback() -> list[dict]
    Store.add_audit(event: dict) -> None        no PHI values in events
    Store.audit(limit: int = 100) -> list[dict]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from cds import jsontext, metrics
from cds.errors import StoreUnavailable

log = logging.getLogger("cds.store")

Row = TypeVar("Row")
T = TypeVar("T")


class Store(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def add_feedback(self, service_id: str, items: list[dict[str, Any]]) -> int: ...
    async def feedback(self) -> list[dict[str, Any]]: ...
    async def add_audit(self, event: dict[str, Any]) -> None: ...
    async def audit(self, limit: int = 100) -> list[dict[str, Any]]: ...


# ---------------------------------------------------------------- SQLite (default)


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


_AUDIT_BATCH_ROWS = 1000  # rows per write: a batch after an outage still ends well within a write timeout


async def within(awaitable: Awaitable[T], timeout_s: float) -> T:
    """`await awaitable`, or TimeoutError once `timeout_s` has passed, at that moment.

    asyncio.wait_for would wait for the cancelled awaitable to end, and psycopg answers a cancellation
    by asking the server to cancel the query (up to 10 s more when the server hangs). Here it runs as a
    task of its own, cancelled on timeout and left to end by itself (its rows are retried, not lost).
    """
    task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout_s))
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    _ORPHANS.add(task)
    task.add_done_callback(_forget)
    raise TimeoutError(f"no answer within {timeout_s:.1f} s")


_ORPHANS: set[asyncio.Future[Any]] = set()  # timed-out tasks, kept referenced until they end


def _forget(task: asyncio.Future[Any]) -> None:
    _ORPHANS.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: the caller has had its TimeoutError


class AuditQueue(Generic[Row]):
    """Audit rows queued by hook calls and written in batches by a background task, every `flush_s` or
    as soon as `wake_at` rows wait: a hook call never waits on the database for its audit row (they are
    not worth a round trip or an fsync each). One write at a time, so batches land in the order queued.

    No row is dropped without being counted (metrics.count_audit_lost) and logged:
    * a write that fails with one of `errors` (the database is away: a retry may succeed) or outlasts
      `write_timeout_s` puts its rows back at the head of the queue, and the task tries again after
      `flush_s`; the write must be idempotent per row (PgStore's rows carry a unique id) because a
      write that timed out may still have landed;
    * any other error means a row the database refuses: the batch is written again row by row, so one
      bad row never takes the others with it; the refused rows are lost ("rejected");
    * the queue holds at most `max_rows`; rows beyond it are lost ("queue-full");
    * `close(timeout_s)` stops the task and keeps writing until the queue is empty or the time is up;
      what is still queued then is lost ("shutdown"). A process killed hard loses its queue uncounted.
    """

    def __init__(
        self,
        write: Callable[[list[Row]], Awaitable[None]],
        flush_s: float,
        errors: tuple[type[BaseException], ...],
        *,
        max_rows: int = 10_000,
        write_timeout_s: float | None = None,
        wake_at: int = 200,
    ) -> None:
        self._write = write
        self._flush_s = flush_s
        self._retry: tuple[type[BaseException], ...] = (*errors, TimeoutError)  # rows kept, retried
        self._requeue_on: tuple[type[BaseException], ...] = (*self._retry, asyncio.CancelledError)
        self._max_rows = max_rows
        self._write_timeout_s = write_timeout_s
        self._wake_at = wake_at
        self._rows: list[Row] = []
        self._writing = asyncio.Lock()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._deadline: float | None = None  # loop time by which close() gives up
        self._lost_while_full = 0  # since the queue last filled up: logged once it drains
        self._unreachable = False  # the last write failed with one of `errors` (logged once per outage)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: Row) -> None:
        if len(self._rows) >= self._max_rows:
            self._lose_full(1)
            return
        self._rows.append(row)
        if len(self._rows) >= self._wake_at and self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._deadline = None
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="cds-audit-flush")

    async def flush(self) -> None:
        """Write the rows queued now. Raises one of the `errors` (or TimeoutError) when the database
        cannot be reached; the rows not written stay queued, in order."""
        async with self._writing:
            pending = len(self._rows)
            while pending > 0 and self._rows:
                n = min(pending, _AUDIT_BATCH_ROWS)
                batch, self._rows = self._rows[:n], self._rows[n:]
                pending -= n
                await self._write_batch(batch)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the task and write what is queued, for at most `timeout_s`; count the rest as lost."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout_s
        if self._task is not None and self._wake is not None:
            self._stopping = True
            self._wake.set()  # the task ends its write (bounded by write_timeout_s), sees _stopping, ends
            done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
            if not done:  # a write with no timeout of its own (SQLite) still running: its rows go back
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        while self._rows and self._left() > 0:
            try:
                await self.flush()
            except self._retry as exc:
                self._report_unreachable(exc)
                await asyncio.sleep(min(0.2, max(0.0, self._left())))  # it may come back in time
        if self._rows:
            lost, self._rows = len(self._rows), []
            metrics.count_audit_lost("shutdown", lost)
            log.error(
                "audit: %d rows not written within the %.1f s shutdown allowance: lost", lost, timeout_s
            )
        self._report_drained()

    def _left(self) -> float:
        if self._deadline is None:
            return float("inf")
        return self._deadline - asyncio.get_running_loop().time()

    async def _loop(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_s)
            self._wake.clear()
            try:
                await self.flush()
            except self._retry as exc:  # the rows are queued again
                self._report_unreachable(exc)
                if not self._stopping:  # not at once: add() keeps waking the task
                    await asyncio.sleep(self._flush_s)
            except Exception:  # a fault of ours: the trail must never stop the service
                log.exception("audit flush failed")

    async def _write_once(self, batch: list[Row]) -> None:
        timeout = min(self._write_timeout_s or float("inf"), max(0.05, self._left()))
        if timeout == float("inf"):
            await self._write(batch)
        else:
            await within(self._write(batch), timeout)

    async def _write_batch(self, batch: list[Row]) -> None:
        try:
            await self._write_once(batch)
        except self._requeue_on:
            self._requeue(batch)
            raise
        except Exception as exc:  # noqa: BLE001 - any other error is a row the database refuses
            if len(batch) == 1:
                self._lose_rejected(1, len(batch), exc)
                return
            await self._write_row_by_row(batch)
            return
        metrics.count_audit_written(len(batch))
        self._report_reachable()

    async def _write_row_by_row(self, batch: list[Row]) -> None:
        """A batch the database refused: one row at a time, so that only the bad rows are lost."""
        refused: BaseException | None = None
        lost = written = 0
        for i, row in enumerate(batch):
            try:
                await self._write_once([row])
            except self._requeue_on:
                self._requeue(batch[i:])
                metrics.count_audit_written(written, "row-by-row")
                self._lose_rejected(lost, len(batch), refused)
                raise
            except Exception as exc:  # noqa: BLE001 - this row is refused (logged by class below)
                lost += 1
                refused = exc
            else:
                written += 1
        metrics.count_audit_written(written, "row-by-row")
        self._lose_rejected(lost, len(batch), refused)
        self._report_reachable()

    def _requeue(self, batch: list[Row]) -> None:
        self._rows[:0] = batch
        over = len(self._rows) - self._max_rows
        if over > 0:  # rows added while the batch was out: the newest go, as add() would have done
            del self._rows[self._max_rows :]
            self._lose_full(over)

    def _lose_full(self, n: int) -> None:
        metrics.count_audit_lost("queue-full", n)
        if not self._lost_while_full:
            log.error(
                "audit queue full (%d rows waiting for the database): new audit rows are lost until it"
                " drains (counted in cds_audit_rows_lost_total)",
                self._max_rows,
            )
        self._lost_while_full += n

    def _lose_rejected(self, n: int, of: int, exc: BaseException | None) -> None:
        if n <= 0:
            return
        metrics.count_audit_lost("rejected", n)
        # the error's class only: its text may quote the row
        log.error("audit: %d of %d rows refused by the database (%s): lost", n, of, type(exc).__name__)

    def _report_unreachable(self, exc: BaseException) -> None:
        if not self._unreachable:
            self._unreachable = True
            log.warning(
                "audit: database unreachable (%s); %d rows queued, retrying",
                type(exc).__name__,
                len(self._rows),
            )

    def _report_reachable(self) -> None:
        if self._unreachable:
            self._unreachable = False
            log.warning("audit: database reachable again; writing %d queued rows", len(self._rows))
        self._report_drained()

    def _report_drained(self) -> None:
        if self._lost_while_full and len(self._rows) < self._max_rows:
            log.error("audit: %d rows were lost while the queue was full", self._lost_while_full)
            self._lost_while_full = 0


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

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is not started")
        return self._conn


def _unavailable(exc: BaseException) -> StoreUnavailable:
    """A database fault, logged by class (its text may quote a row) and answered 503."""
    log.error("database unavailable: %s", type(exc).__name__)
    return StoreUnavailable()


def sqlite_path(settings: Any) -> str:
    """The SQLite file: `CDS_DATABASE_URL=sqlite:///path` or `<state_dir>/cds.sqlite3`."""
    url = getattr(settings, "database_url", None)
    if url:
        if url.startswith("sqlite:///"):
            return url[len("sqlite:///") :] or ":memory:"
        if url.startswith("sqlite://"):
            return url[len("sqlite://") :] or ":memory:"
    return str(Path(settings.state_dir) / "cds.sqlite3")


def open_store(settings: Any) -> Store:
    """Build (not start) the store named by the settings."""
    url = getattr(settings, "database_url", None)
    if url and url.startswith(("postgresql://", "postgres://")):
        from cds.store_pg import PgStore  # psycopg is imported only when PostgreSQL is configured

        return PgStore(
            url,
            timeout_s=settings.database_timeout_s,
            audit_queue_max=settings.audit_queue_max,
            shutdown_timeout_s=settings.shutdown_timeout_s,
        )
    if url and not url.startswith("sqlite:"):
        raise ValueError(f"unsupported CDS_DATABASE_URL scheme: {url.split(':', 1)[0]!r}")
    return SqliteStore(
        sqlite_path(settings),
        audit_queue_max=settings.audit_queue_max,
        shutdown_timeout_s=settings.shutdown_timeout_s,
    )
