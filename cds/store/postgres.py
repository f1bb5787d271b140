"""PostgreSQL backend of the Store contract (cds/store/__init__.py), for several replicas sharing one database.

Chosen by open_store() when CDS_DATABASE_URL is a `postgresql://` (or `postgres://`) URL.

* Driver: psycopg 3 (async) with a small psycopg_pool pool per process (min 1, max `max_size`).
* Migrations run in start(), inside one transaction holding a transaction-scoped advisory lock
  (pg_advisory_xact_lock), so replicas that start together apply each version exactly once: the
  others wait on the lock, then find the version recorded in `cds_schema_migrations` and skip it.
* Feedback is idempotent on (service_id, card, outcome, outcomeTimestamp, accepted suggestion ids):
  a unique index plus INSERT … ON CONFLICT DO NOTHING, one statement per call; add_feedback()
  returns after COMMIT. The ids enter the index through `cds_suggestions_key(body)` (migration 2:
  the distinct ids sorted, as a JSON array), so two suggestions of one card accepted in the same
  second are two rows, while a repeat of one item is still one.
* Audit events go through the same AuditQueue as SqliteStore's (one round trip per batch, not one per
  hook call); `audit()` and `close()` write the queue first. They are JSONB with the fields people
  query (time, service, hookInstance, issuer) as columns; `SELECT * FROM cds_audit ORDER BY at DESC`
  is the trail. Callers put no PHI in events. Each row carries a random `event_id` (migration 3,
  unique), so a batch retried after a write that timed out but landed is not stored twice.
* PostgreSQL refuses NUL (U+0000) in text and jsonb: it is stored as U+FFFD in audit rows and
  feedback, so such a value can neither fail the call nor take other rows with it.
* Every call waits at most `timeout_s` for the database (pool, connect and the statement itself,
  measured here: a paused server answers nothing); then feedback answers 503 (StoreUnavailable) and
  audit rows stay queued for a retry.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from cds import jsontext
from cds.errors import BadHookRequest, StoreUnavailable
from cds.store.audit_queue import AuditQueue, within

log = logging.getLogger("cds.store")

T = TypeVar("T")

# The database is away (refused, reset, shut down, pool exhausted: PoolTimeout is an OperationalError)
# or did not answer in time: worth a retry, and a 503 for a call waiting on it.
_UNREACHABLE: tuple[type[BaseException], ...] = (psycopg.OperationalError, OSError, TimeoutError)
_NOT_READY: tuple[type[BaseException], ...] = (psycopg.Error, OSError, TimeoutError)

__all__ = ["MIGRATIONS", "PgStore", "is_postgres_url"]

# An arbitrary 64-bit key that names "cds schema migrations" among advisory locks in this database.
_MIGRATION_LOCK_KEY = 0x6364_735F_6D69_6772  # "cds_migr"

# Append only: a released version is never edited; a change is a new entry.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE cds_feedback (
            id                bigserial PRIMARY KEY,
            service_id        text        NOT NULL,
            card              text        NOT NULL,
            outcome           text        NOT NULL,
            outcome_timestamp text        NOT NULL,
            body              jsonb       NOT NULL,
            received_at       timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX cds_feedback_once
            ON cds_feedback (service_id, card, outcome, outcome_timestamp);
        CREATE TABLE cds_audit (
            id            bigserial PRIMARY KEY,
            at            timestamptz NOT NULL DEFAULT now(),
            service_id    text,
            hook_instance text,
            issuer        text,
            event         jsonb       NOT NULL
        );
        CREATE INDEX cds_audit_at ON cds_audit (at DESC);
        CREATE INDEX cds_audit_hook_instance ON cds_audit (hook_instance);
        """,
    ),
    (
        2,
        # Widens the feedback key: every existing row stays unique under the wider key (the old key was
        # stricter), so the new index always builds; the old one is dropped after it, in one transaction.
        """
        CREATE OR REPLACE FUNCTION cds_suggestions_key(body jsonb) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT array_to_json(ARRAY(
                SELECT DISTINCT (s ->> 'id') COLLATE "C" AS id
                FROM jsonb_array_elements(
                    CASE WHEN jsonb_typeof(body -> 'acceptedSuggestions') = 'array'
                         THEN body -> 'acceptedSuggestions' ELSE '[]'::jsonb END) AS s
                ORDER BY id
            ))::text
        $$;
        CREATE UNIQUE INDEX cds_feedback_once_v2
            ON cds_feedback (service_id, card, outcome, outcome_timestamp, cds_suggestions_key(body));
        DROP INDEX cds_feedback_once;
        """,
    ),
    (
        3,
        # An id per audit row, made by the service: a retried batch (its first write timed out, yet
        # landed) inserts nothing twice. Rows written before this version have none.
        """
        ALTER TABLE cds_audit ADD COLUMN event_id uuid;
        CREATE UNIQUE INDEX cds_audit_event_id ON cds_audit (event_id);
        """,
    ),
)

_FEEDBACK_KEYS = ("card", "outcome", "outcomeTimestamp")


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


class PgStore:
    """Feedback and audit in PostgreSQL. Build it, `await start()`, and `await close()` on shutdown."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        timeout_s: float = 2.0,
        audit_flush_s: float = 0.5,
        audit_queue_max: int = 10_000,
        shutdown_timeout_s: float = 10.0,
    ) -> None:
        if not is_postgres_url(dsn):
            raise ValueError("PgStore needs a postgresql:// URL")
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._audit: AuditQueue[tuple[Any, ...]] = AuditQueue(
            self._write_audit,
            audit_flush_s,
            _UNREACHABLE,
            max_rows=audit_queue_max,
            write_timeout_s=timeout_s,
        )
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            open=False,
            # a connection from the pool is checked first: one the server dropped (restart) is
            # replaced, not handed to a call that then fails
            check=AsyncConnectionPool.check_connection,
            # libpq takes whole seconds, at least 2
            kwargs={"connect_timeout": max(2, math.ceil(timeout_s)), "application_name": "cds"},
        )

    async def connect(self) -> None:
        """Open the pool and wait for its first connection (startup may wait longer than a call)."""
        await self._pool.open(wait=True, timeout=max(10.0, self._timeout_s))

    async def start(self) -> None:
        await self.connect()
        await self.migrate()
        self._audit.start()

    async def close(self) -> None:
        """Write the queued audit rows, for at most shutdown_timeout_s (the rest is counted as lost)."""
        await self._audit.close(self._shutdown_timeout_s)
        try:
            await within(self._pool.close(timeout=1.0), 2.0)
        except TimeoutError:
            log.warning("database pool did not close in time")

    async def ping(self) -> bool:
        async def _ping() -> None:
            async with self._pool.connection() as conn:
                await conn.execute("SELECT 1")

        try:
            await within(_ping(), self._timeout_s)
            return True
        except _NOT_READY:
            return False

    async def _bounded(self, operation: Awaitable[T]) -> T:
        """One call's database work, within timeout_s; a database fault becomes a 503."""
        try:
            return await within(operation, self._timeout_s)
        except _UNREACHABLE as exc:
            log.warning("database unreachable: %s", type(exc).__name__)
            raise StoreUnavailable() from None
        except psycopg.Error as exc:  # class only: the text may quote values
            log.error("database error: %s (SQLSTATE %s)", type(exc).__name__, exc.sqlstate)
            raise StoreUnavailable() from None

    async def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; return the versions applied by this call."""
        applied: list[int] = []
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS cds_schema_migrations ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM cds_schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for version, sql in MIGRATIONS:
                if version in done:
                    continue
                await conn.execute(sql)  # our own constant DDL
                await conn.execute("INSERT INTO cds_schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
        return applied

    async def schema_version(self) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM cds_schema_migrations")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def add_feedback(self, service_id: str, items: list[dict[str, Any]]) -> int:
        for item in items:
            missing = [k for k in _FEEDBACK_KEYS if not isinstance(item.get(k), str) or not item.get(k)]
            if missing:
                raise ValueError(f"feedback item lacks {', '.join(missing)}")
        if not items:
            return 0
        return await self._bounded(self._insert_feedback(_without_nul(service_id), _without_nul(items)))

    async def _insert_feedback(self, service_id: str, items: list[dict[str, Any]]) -> int:
        async with self._pool.connection() as conn:
            try:
                cur = await conn.execute(
                    "INSERT INTO cds_feedback (service_id, card, outcome, outcome_timestamp, body)"
                    " SELECT %s, e->>'card', e->>'outcome', e->>'outcomeTimestamp', e"
                    " FROM jsonb_array_elements(%s) AS e"
                    " ON CONFLICT DO NOTHING",
                    (service_id, Jsonb(items)),
                )
            except psycopg.DataError:  # text jsonb cannot hold (a lone surrogate): the EHR's to fix
                raise BadHookRequest(
                    "feedback holds text that cannot be stored", code="bad-feedback"
                ) from None
            new_rows = cur.rowcount
        # leaving the connection block committed the transaction: the rows are durable now
        return new_rows

    async def feedback(self) -> list[dict[str, Any]]:
        return await self._bounded(self._read_feedback())

    async def _read_feedback(self) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT service_id, body, received_at FROM cds_feedback ORDER BY id")
            rows = await cur.fetchall()
        return [
            {
                "service_id": row["service_id"],
                "card": row["body"]["card"],
                "outcome": row["body"]["outcome"],
                "outcomeTimestamp": row["body"]["outcomeTimestamp"],
                "acceptedSuggestions": row["body"].get("acceptedSuggestions") or [],
                "overrideReason": row["body"].get("overrideReason") or None,
                "received_at": row["received_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            for row in rows
        ]  # the same shape as SqliteStore.feedback()

    async def add_audit(self, event: dict[str, Any]) -> None:
        at = _parse_time(event.get("time") or event.get("at")) or datetime.now(UTC)
        data = jsontext.dumps(event)  # once, as SqliteStore does; the INSERT casts it to jsonb
        if "\\u0000" in data or "\x00" in data:  # rare: jsonb and text refuse NUL, however escaped
            event = _without_nul(event)
            data = jsontext.dumps(event)
        self._audit.add(
            (
                uuid.uuid4(),
                at,
                _text(event.get("service_id") or event.get("service")),
                _text(event.get("hookInstance") or event.get("hook_instance")),
                _text(event.get("issuer") or event.get("iss")),
                data,
            )
        )

    async def _write_audit(self, batch: list[tuple[Any, ...]]) -> None:
        async with self._pool.connection() as conn, conn.cursor() as cur:  # one transaction
            await cur.executemany(
                "INSERT INTO cds_audit (event_id, at, service_id, hook_instance, issuer, event)"
                " VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (event_id) DO NOTHING",
                batch,
            )

    async def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        try:
            await self._audit.flush()
        except _UNREACHABLE:
            raise StoreUnavailable() from None
        return await self._bounded(self._read_audit(limit))

    async def _read_audit(self, limit: int) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT event FROM cds_audit ORDER BY id DESC LIMIT %s", (max(0, limit),))
            rows = await cur.fetchall()
        return [row["event"] for row in rows]  # newest first, as given (the same as SqliteStore.audit())


def _without_nul(value: Any) -> Any:
    """`value` with every NUL in its strings (keys too) replaced by U+FFFD, which PostgreSQL stores."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nul(v) for v in value]
    return value


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
