"""Durable state: feedback and audit events. SQLite by default; PostgreSQL when CDS_DATABASE_URL names it.

    open_store(settings) -> Store       built, not started
    Store.start() (creates/migrates schema), close(), ping() -> bool
    Store.add_feedback(service_id, items: list[dict]) -> int   new rows; idempotent on
        (service_id, card, outcome, outcomeTimestamp, accepted suggestion ids sorted), so two
        suggestions of one card accepted in the same second are two rows and a repeat is none;
        returns only after the rows are durable
    Store.feedback() -> list[dict]
    Store.add_audit(event: dict) -> None        no PHI values in events; queued, written in batches
    Store.audit(limit: int = 100) -> list[dict]

Modules: `audit_queue.py` (the batching audit queue both stores use), `sqlite.py` (SqliteStore),
`postgres.py` (PgStore, imported only when PostgreSQL is configured, so psycopg is not loaded otherwise).
Neither store imports this package's `__init__`'s names: no cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cds.settings import Settings
from cds.store.audit_queue import AuditQueue, within
from cds.store.sqlite import SqliteStore, suggestions_key

if TYPE_CHECKING:
    from cds.store.postgres import PgStore

__all__ = ["AuditQueue", "SqliteStore", "Store", "open_store", "sqlite_path", "suggestions_key", "within"]


class Store(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def add_feedback(self, service_id: str, items: list[dict[str, Any]]) -> int: ...
    async def feedback(self) -> list[dict[str, Any]]: ...
    async def add_audit(self, event: dict[str, Any]) -> None: ...
    async def audit(self, limit: int = 100) -> list[dict[str, Any]]: ...


def sqlite_path(settings: Settings) -> str:
    """The SQLite file: `CDS_DATABASE_URL=sqlite:///path` or `<state_dir>/cds.sqlite3`."""
    url = settings.database_url
    if url:
        if url.startswith("sqlite:///"):
            return url[len("sqlite:///") :] or ":memory:"
        if url.startswith("sqlite://"):
            return url[len("sqlite://") :] or ":memory:"
    return str(Path(settings.state_dir) / "cds.sqlite3")


def _postgres(settings: Settings, url: str) -> PgStore:
    from cds.store.postgres import PgStore  # psycopg is imported only when PostgreSQL is configured

    return PgStore(
        url,
        timeout_s=settings.database_timeout_s,
        audit_queue_max=settings.audit_queue_max,
        shutdown_timeout_s=settings.shutdown_timeout_s,
    )


def open_store(settings: Settings) -> Store:
    """Build (not start) the store named by the settings."""
    url = settings.database_url
    if url and url.startswith(("postgresql://", "postgres://")):
        return _postgres(settings, url)
    if url and not url.startswith("sqlite:"):
        raise ValueError(f"unsupported CDS_DATABASE_URL scheme: {url.split(':', 1)[0]!r}")
    return SqliteStore(
        sqlite_path(settings),
        audit_queue_max=settings.audit_queue_max,
        shutdown_timeout_s=settings.shutdown_timeout_s,
    )
