"""SQLite store: durable settings, idempotent feedback, batched audit (its queue), database URL."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from cds.settings import Settings
from cds.store import AuditQueue, SqliteStore, open_store, sqlite_path

FB = {
    "card": "c1",
    "outcome": "accepted",
    "outcomeTimestamp": "2024-05-01T10:00:00Z",
    "acceptedSuggestions": [{"id": "s1"}],
}


async def test_feedback_idempotent_and_durable_settings(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db" / "cds.sqlite3")
    await store.start()
    try:
        assert await store.ping()
        assert await store.add_feedback("svc", [FB, FB]) == 1
        assert await store.add_feedback("svc", [FB]) == 0
        assert await store.add_feedback("other", [FB]) == 1
        got = await store.feedback()
        assert [(r["service_id"], r["card"], r["acceptedSuggestions"]) for r in got] == [
            ("svc", "c1", [{"id": "s1"}]),
            ("other", "c1", [{"id": "s1"}]),
        ]
        assert await store.durability() == ("wal", 2)  # WAL, synchronous=FULL
    finally:
        await store.close()
    assert not await store.ping()
    with sqlite3.connect(tmp_path / "db" / "cds.sqlite3") as db:  # committed, visible to another connection
        assert db.execute("SELECT count(*) FROM feedback").fetchone()[0] == 2


async def test_audit_batched_and_flushed_on_close(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.sqlite3", audit_flush_s=60)
    await store.start()
    await store.add_audit({"service": "s", "hookInstance": "h1"})
    assert (await store.audit())[0]["hookInstance"] == "h1"  # audit() flushes first
    await store.add_audit({"service": "s", "hookInstance": "h2"})
    await store.close()
    with sqlite3.connect(tmp_path / "a.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM audit").fetchone()[0] == 2


def test_paths_from_settings(tmp_path: Path) -> None:
    assert sqlite_path(Settings(_env_file=None, state_dir=tmp_path)) == str(tmp_path / "cds.sqlite3")
    s = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/x.db")
    assert sqlite_path(s) == f"{tmp_path}/x.db"
    assert isinstance(open_store(s), SqliteStore)
    with pytest.raises(ValueError):
        open_store(Settings(_env_file=None, database_url="mysql://x"))


@pytest.mark.parametrize("n", [1, 249, 250, 251, 737])
async def test_audit_flush_keeps_every_event_in_order(tmp_path: Path, n: int) -> None:
    """A flush writes its batch as multi-row INSERTs of at most 250 rows: none lost, none reordered."""
    store = SqliteStore(tmp_path / "a.sqlite3", audit_flush_s=60)
    await store.start()
    try:
        for i in range(n):
            await store.add_audit({"time": f"2026-11-28T00:00:{i % 60:02d}Z", "hookInstance": f"h{i}"})
        got = await store.audit(limit=n + 10)  # newest first
    finally:
        await store.close()
    assert [e["hookInstance"] for e in got] == [f"h{i}" for i in reversed(range(n))]
    with sqlite3.connect(tmp_path / "a.sqlite3") as db:
        ats = [r[0] for r in db.execute("SELECT at FROM audit ORDER BY id")]
    assert ats == [f"2026-11-28T00:00:{i % 60:02d}Z" for i in range(n)]


async def test_close_during_a_write_loses_nothing() -> None:
    """close() while the flush task is inside a write: that batch still lands, then the rest, in order
    (cancelling the task there dropped the batch it held: a PostgreSQL replica lost audit rows)."""
    written: list[list[int]] = []
    writing = asyncio.Event()

    async def write(batch: list[int]) -> None:
        writing.set()
        await asyncio.sleep(0.2)  # a database round trip: cancellable, as psycopg's are
        written.append(batch)

    queue: AuditQueue[int] = AuditQueue(write, flush_s=0.01, errors=(OSError,))
    queue.start()
    queue.add(1)
    queue.add(2)
    await asyncio.wait_for(writing.wait(), 5)  # the task holds [1, 2] and is writing it
    queue.add(3)
    await queue.close()
    assert written == [[1, 2], [3]]


def test_audit_json_reads_back_as_json_dumps_wrote_it() -> None:
    """jsontext.dumps, which writes audit events (orjson first), reads back as json.dumps(event, default=str) did, except NaN and
    infinities, which become null (JSON has no such numbers); what orjson refuses goes to json."""
    import json
    import math
    import uuid
    from datetime import UTC, datetime

    from cds.jsontext import dumps

    when = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
    events = [
        {
            "time": when.isoformat(),
            "service": "pml-plex-select",
            "hookInstance": str(uuid.uuid4()),
            "outcome": "cards",
            "status": 200,
            "cards": ["plex-estimate", "iris", "dmt"],
            "ms": 2.3,
            "sources": {"labs": "prefetch", "conditions": "fhir"},
            "skipped": 0,
        },
        {"at": when, "id": uuid.UUID(int=7), "note": "Zürich \u2028 µg/mL"},  # default=str, non-ASCII
        {"big": 2**70, "n": 1},  # beyond 64 bits: orjson refuses, json writes it
        {1: "non-str key"},  # json writes "1"
    ]
    for event in events:
        assert json.loads(dumps(event)) == json.loads(json.dumps(event, default=str)), event
    assert json.loads(dumps({"ms": math.nan, "x": math.inf})) == {"ms": None, "x": None}
