"""The audit trail on PostgreSQL never drops a row silently (issue 18, defects 1 and 2): a row the database
refuses takes no other row with it; a paused, crashed or restarted server loses nothing; the queue is
bounded, and close() ends in its allowance while the server hangs, counting what it could not write.

The fault tests pause (SIGSTOP), crash and restart a PostgreSQL server of this module's own
(tests/deploy/own_postgres.py); the shared one on 5432 serves only the tests that break nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from cds import demo, metrics
from cds.errors import StoreUnavailable
from cds.settings import Settings
from cds.store.postgres import PgStore
from tests.deploy.own_postgres import OwnPostgres
from tests.support.servers import serve_service


@contextlib.asynccontextmanager
async def started(store: PgStore, server: OwnPostgres | None = None) -> AsyncIterator[PgStore]:
    """The store, started; closed in the end however the test ends (a store left open hangs the test)."""
    await store.start()
    try:
        yield store
    finally:
        if server is not None:
            server.resume()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(store.close(), 20)  # a second close() does nothing


def _lost(reason: str) -> float:
    return metrics.registry().get_sample_value("cds_audit_rows_lost_total", {"reason": reason}) or 0.0


def _rows(dsn: str, stem: str) -> int:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM cds_audit WHERE hook_instance LIKE %s", (stem + "%",)
        ).fetchone()
    return int(row[0]) if row else 0


def _event(stem: str, i: int, **extra: object) -> dict[str, object]:
    return {"service": "pml-plex-select", "hookInstance": f"{stem}-{i}", "outcome": "cards", **extra}


async def test_a_refused_row_does_not_take_the_rest_of_its_batch(pg_dsn: str) -> None:
    """One batch: 20 good rows, one with NUL (stored, as U+FFFD) and one PostgreSQL cannot encode at all
    (a lone surrogate): 21 rows land and the one refused is counted. Before: the batch was lost whole."""
    before = _lost("rejected")
    async with started(PgStore(pg_dsn, timeout_s=2.0)) as store:
        for i in range(10):
            await store.add_audit(_event("refused", i))
        await store.add_audit(_event("refused", 10, note="a\x00b", service="pml\x00plex"))
        await store.add_audit(_event("refused", 11, note="\ud800"))
        for i in range(12, 22):
            await store.add_audit(_event("refused", i))
        await store.close()

    assert _rows(pg_dsn, "refused") == 21
    assert _lost("rejected") - before == 1
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT service_id, event->>'note' FROM cds_audit WHERE hook_instance = 'refused-10'"
        ).fetchone()
    assert row == ("pml\ufffdplex", "a\ufffdb")


async def test_a_pause_longer_than_the_timeout_loses_no_row(own_pg: OwnPostgres, own_dsn: str) -> None:
    """The server hangs for 4 s (timeout 1 s) while feedback reads hold the pool's connections and hook
    calls keep queueing rows: the reads answer StoreUnavailable, and every row lands after the pause.
    Before: the flush's PoolTimeout dropped its batch, and the reads hung for the whole pause."""
    lost_before = _lost("queue-full") + _lost("rejected") + _lost("shutdown")
    added = 0
    async with started(PgStore(own_dsn, timeout_s=1.0, max_size=2), own_pg) as store:
        for _ in range(50):
            await store.add_audit(_event("pause", added))
            added += 1
        await asyncio.sleep(1.0)  # written: the pause below begins with an idle pool
        own_pg.pause()
        began = time.monotonic()
        reads = [asyncio.create_task(store.feedback()) for _ in range(2)]  # hold every connection
        while time.monotonic() - began < 4.0:
            for _ in range(20):
                await store.add_audit(_event("pause", added))
                added += 1
            await asyncio.sleep(0.1)
        done, _ = await asyncio.wait(reads, timeout=1.0)
        assert len(done) == 2, "feedback reads still waiting on the hung server"
        assert all(isinstance(r.exception(), StoreUnavailable) for r in done)
        own_pg.resume()
        await asyncio.sleep(3.0)  # the queue is retried after the pause
        await store.close()
    assert _rows(own_dsn, "pause") == added
    assert _lost("queue-full") + _lost("rejected") + _lost("shutdown") == lost_before


async def test_a_crash_and_restart_under_load_loses_no_row(own_pg: OwnPostgres, own_dsn: str) -> None:
    """Rows keep coming while the server crashes (immediate stop) and starts again: every row lands.
    Before: each flush during the outage dropped its batch."""
    added = 0
    async with started(PgStore(own_dsn, timeout_s=1.0)) as store:

        async def load(seconds: float) -> None:
            nonlocal added
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for _ in range(10):
                    await store.add_audit(_event("crash", added))
                    added += 1
                await asyncio.sleep(0.05)

        await load(1.0)
        await asyncio.to_thread(own_pg.crash)
        await load(1.5)
        restart = asyncio.create_task(asyncio.to_thread(own_pg.start))
        await load(1.0)
        await restart
        await load(1.0)
        await asyncio.sleep(2.5)  # the pool reconnects; the queue is retried
        await store.close()
    assert _rows(own_dsn, "crash") == added


async def test_the_queue_is_bounded_and_what_it_sheds_is_counted(own_pg: OwnPostgres, own_dsn: str) -> None:
    """With the server hung, 250 rows against a bound of 100: 150 counted lost at once, the 100 kept
    land once it answers again."""
    before = _lost("queue-full")
    async with started(PgStore(own_dsn, timeout_s=1.0, audit_queue_max=100), own_pg) as store:
        own_pg.pause()
        for i in range(250):  # add_audit never yields: the flush task takes none of them meanwhile
            await store.add_audit(_event("bounded", i))
        assert _lost("queue-full") - before == 150
        await asyncio.sleep(1.5)  # a write times out; its rows go back to the head of the queue
        own_pg.resume()
        await store.close()
    assert _rows(own_dsn, "bounded") == 100
    assert _lost("queue-full") - before == 150


async def test_close_ends_in_its_allowance_while_the_server_hangs(own_pg: OwnPostgres, own_dsn: str) -> None:
    """close() with the server hung: it ends after its allowance (2 s) and counts the 100 unwritten rows.
    Before: close() waited on the hung write for ever (SIGTERM never completed)."""
    before = _lost("shutdown")
    async with started(PgStore(own_dsn, timeout_s=1.0, shutdown_timeout_s=2.0), own_pg) as store:
        own_pg.pause()
        for i in range(100):
            await store.add_audit(_event("close", i))
        began = time.monotonic()
        closing = asyncio.create_task(store.close())
        done, _ = await asyncio.wait({closing}, timeout=8.0)
        took = time.monotonic() - began
        assert done, "close() still waiting on the hung server after 8 s"
        own_pg.resume()
    assert took < 6.0, took  # allowance 2 s + closing the pool (at most 2 s)
    assert _lost("shutdown") - before == 100
    assert _rows(own_dsn, "close") == 0  # nothing was committed: the count is exact


def _feedback(comment: str) -> dict[str, object]:
    return {
        "feedback": [
            {
                "card": "6f1c8e6e-3a52-4a44-9f5e-5b0a8e0b1a11",
                "outcome": "overridden",
                "overrideReason": {"userComment": comment},
                "outcomeTimestamp": "2026-01-05T10:00:00Z",
            }
        ]
    }


def test_nul_in_feedback_or_hook_instance_is_never_a_500(pg_dsn: str, tmp_path: Path) -> None:
    """Feedback with a NUL is stored (NUL as U+FFFD; before: 500); a hookInstance that is not a UUID, NUL
    or not, is a 400 with an OperationOutcome (before: 200, and its audit row took its batch down)."""
    settings = Settings(auth="off", database_url=pg_dsn, state_dir=tmp_path, _env_file=None)
    with serve_service(settings) as base, httpx.Client(timeout=10) as http:
        r = http.post(f"{base}/cds-services/pml-plex-select/feedback", json=_feedback("declined\x00twice"))
        assert r.status_code == 200, r.text
        body = demo.hook_request(demo.patient("high-level", datetime.now(UTC)), "order-select")
        for bad in ("\x00", "abc\x00", "not-a-uuid", "d1577c69-dfbe-44ad-ba6d-3e05e953b2e"):
            r = http.post(f"{base}/cds-services/pml-plex-select", json={**body, "hookInstance": bad})
            assert r.status_code == 400, (bad, r.status_code, r.text)
            assert r.json()["resourceType"] == "OperationOutcome"
        assert http.post(f"{base}/cds-services/pml-plex-select", json=body).status_code == 200
    with psycopg.connect(pg_dsn) as conn:
        comment = conn.execute("SELECT body->'overrideReason'->>'userComment' FROM cds_feedback").fetchone()
        audited = conn.execute("SELECT hook_instance FROM cds_audit").fetchall()
    assert comment == ("declined\ufffdtwice",)
    assert audited == [(body["hookInstance"],)]
