"""Durable state: feedback and audit events. SQLite by default; PostgreSQL when CDS_DATABASE_URL names it.

CONTRACT (the service work implements SQLite; the deployment work adds PostgreSQL):
    open_store(settings) -> Store
    Store.start() (creates/migrates schema), close(), ping() -> bool
    Store.add_feedback(service_id, items: list[dict]) -> int   new rows; idempotent on
        (service_id, card, outcome, outcomeTimestamp); returns only after the rows are durable
    Store.feedback() -> list[dict]
    Store.add_audit(event: dict) -> None        no PHI values in events
    Store.audit(limit: int = 100) -> list[dict]
"""

from __future__ import annotations

from typing import Any, Protocol


class Store(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def add_feedback(self, service_id: str, items: list[dict[str, Any]]) -> int: ...
    async def feedback(self) -> list[dict[str, Any]]: ...
    async def add_audit(self, event: dict[str, Any]) -> None: ...
    async def audit(self, limit: int = 100) -> list[dict[str, Any]]: ...
