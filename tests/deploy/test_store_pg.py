"""cds/store/postgres.py against the real local PostgreSQL, one fresh database per test."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from cds.store.postgres import MIGRATIONS, PgStore, is_postgres_url


def _item(card: str, outcome: str = "accepted", ts: str = "2026-01-05T10:00:00Z") -> dict[str, object]:
    item: dict[str, object] = {"card": card, "outcome": outcome, "outcomeTimestamp": ts}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": "s1"}]
    else:
        item["overrideReason"] = {"reason": {"code": "patient-declined"}, "userComment": "n/a"}
    return item


async def test_concurrent_starters_migrate_once(pg_dsn: str) -> None:
    stores = [PgStore(pg_dsn) for _ in range(6)]
    try:
        await asyncio.gather(*(s.start() for s in stores))
        assert await stores[0].schema_version() == MIGRATIONS[-1][0]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT version FROM cds_schema_migrations ORDER BY version").fetchall()
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert [r[0] for r in rows] == [v for v, _ in MIGRATIONS]
    assert {"cds_feedback", "cds_audit", "cds_schema_migrations"} <= tables


_STARTER = """
import asyncio, os, sys, time
from cds.store.postgres import PgStore

async def main() -> None:
    store = PgStore(sys.argv[1])
    await store.connect()
    open(sys.argv[3], "w").close()
    while not os.path.exists(sys.argv[2]):  # start line: every process is connected first
        await asyncio.sleep(0.005)
    try:
        print(",".join(map(str, await store.migrate())))
    finally:
        await store.close()

asyncio.run(main())
"""


def test_separate_processes_starting_together_apply_each_migration_once(pg_dsn: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    ready = [tmp_path / f"ready-{i}" for i in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _STARTER, pg_dsn, str(go), str(r)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.02)
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), [err for _, err in outs]
    applied = sorted(int(v) for out, _ in outs for v in out.split(",") if v.strip())
    assert applied == [v for v, _ in MIGRATIONS]  # every version by exactly one starter


async def test_feedback_is_idempotent_and_durable(pg_dsn: str) -> None:
    a, b = PgStore(pg_dsn), PgStore(pg_dsn)  # two replicas
    await asyncio.gather(a.start(), b.start())
    try:
        card1, card2 = str(uuid.uuid4()), str(uuid.uuid4())
        batch = [_item(card1), _item(card2, "overridden")]
        assert await a.add_feedback("pml-plex", batch) == 2
        assert await b.add_feedback("pml-plex", batch) == 0  # the EHR retried against another replica
        # same card, new outcome time counts; a duplicate inside one batch counts once
        later = _item(card1, ts="2026-01-05T11:00:00Z")
        assert await a.add_feedback("pml-plex", [later, later]) == 1
        # another service may send the same card id
        assert await b.add_feedback("other-service", [_item(card1)]) == 1
        results = await asyncio.gather(
            *(s.add_feedback("pml-plex", [_item(f"c{i}")]) for i in range(20) for s in (a, b))
        )
        assert sum(results) == 20
        rows = await b.feedback()
    finally:
        await asyncio.gather(a.close(), b.close())
    assert len(rows) == 24
    assert rows[0]["card"] == card1 and rows[0]["service_id"] == "pml-plex"
    assert rows[1]["overrideReason"]["reason"]["code"] == "patient-declined"
    # durable: a brand-new connection sees every row
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM cds_feedback").fetchone()[0] == 24  # type: ignore[index]


async def test_feedback_without_required_fields_is_refused(pg_dsn: str) -> None:
    store = PgStore(pg_dsn)
    await store.start()
    try:
        with pytest.raises(ValueError, match="outcomeTimestamp"):
            await store.add_feedback("pml-plex", [{"card": "x", "outcome": "accepted"}])
        assert await store.add_feedback("pml-plex", []) == 0
        assert await store.feedback() == []
    finally:
        await store.close()


async def test_audit_is_queryable_from_sql(pg_dsn: str) -> None:
    store = PgStore(pg_dsn)
    await store.start()
    try:
        for i in range(3):
            await store.add_audit(
                {
                    "time": f"2026-01-05T10:0{i}:00Z",
                    "service_id": "pml-plex",
                    "hookInstance": f"hook-{i}",
                    "issuer": "https://ehr.example.org",
                    "sources": {"prefetch": ["patient", "levels"], "fhir": []},
                    "cards": [{"kind": "pk-estimate", "indicator": "info"}],
                }
            )
        newest = await store.audit(limit=2)  # newest first
        assert [e["hookInstance"] for e in newest] == ["hook-2", "hook-1"]
        assert newest[0]["cards"] == [{"kind": "pk-estimate", "indicator": "info"}]
        assert await store.ping()
    finally:
        await store.close()
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT service_id, issuer, event->'sources'->'prefetch' FROM cds_audit WHERE hook_instance = %s",
            ("hook-1",),
        ).fetchone()
    assert row == ("pml-plex", "https://ehr.example.org", ["patient", "levels"])


async def test_ping_is_false_when_the_server_is_gone() -> None:
    store = PgStore("postgresql://nobody@127.0.0.1:1/none", timeout_s=1)
    assert await store.ping() is False
    await store.close()


def test_url_dispatch() -> None:
    assert is_postgres_url("postgresql://u@h/db") and is_postgres_url("postgres://h/db")
    assert not is_postgres_url("sqlite:///x.db") and not is_postgres_url(None)
    with pytest.raises(ValueError):
        PgStore("sqlite:///x.db")


async def test_open_store_dispatches_and_both_backends_agree(pg_dsn: str, tmp_path: object) -> None:
    """The same calls give the same answers from SQLite (embedded) and PostgreSQL (shared)."""
    from cds.settings import Settings
    from cds.store import open_store

    pg = open_store(Settings(database_url=pg_dsn))
    lite = open_store(Settings(state_dir=tmp_path))
    assert isinstance(pg, PgStore) and not isinstance(lite, PgStore)
    answers = []
    for store in (lite, pg):
        await store.start()
        try:
            card = "3f1c9d3e-0000-4000-8000-000000000001"
            assert await store.add_feedback("pml-plex-select", [_item(card), _item(card, "overridden")]) == 2
            assert await store.add_feedback("pml-plex-select", [_item(card)]) == 0
            for i in range(2):
                await store.add_audit(
                    {
                        "time": f"2026-01-05T10:0{i}:00Z",
                        "service_id": "pml-plex-select",
                        "hookInstance": f"h{i}",
                        "cards": [{"indicator": "warning"}],
                    }
                )
            rows = [{k: v for k, v in r.items() if k != "received_at"} for r in await store.feedback()]
            answers.append((rows, await store.audit(limit=10)))
        finally:
            await store.close()
    assert answers[0] == answers[1]
    assert [e["hookInstance"] for e in answers[1][1]] == ["h1", "h0"]


async def test_audit_is_written_in_the_background_and_on_close(pg_dsn: str) -> None:
    """add_audit only queues: the flush task writes the queue (here every 50 ms), close() the rest."""

    def rows(hook: str) -> int:
        with psycopg.connect(pg_dsn) as conn:
            found = conn.execute(
                "SELECT count(*) FROM cds_audit WHERE hook_instance = %s", (hook,)
            ).fetchone()
        return int(found[0]) if found else 0

    store = PgStore(pg_dsn, audit_flush_s=0.05)
    await store.start()
    try:
        await store.add_audit({"service": "pml-plex-select", "hookInstance": "bg-1"})
        for _ in range(100):  # bounded wait for the flush task
            if rows("bg-1"):
                break
            await asyncio.sleep(0.05)
        assert rows("bg-1") == 1
    finally:
        await store.close()
    store = PgStore(pg_dsn, audit_flush_s=3600)  # never on its own: only close() can write it
    await store.start()
    await store.add_audit({"service": "pml-plex-select", "hookInstance": "bg-2"})
    assert rows("bg-2") == 0
    await store.close()
    assert rows("bg-2") == 1
