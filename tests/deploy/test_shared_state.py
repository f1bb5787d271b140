"""Shared state for several replicas: the FHIR read cache and chart links in Redis, and the feedback key
(with the accepted suggestion ids) on SQLite and PostgreSQL, including the migration of existing tables.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from cds.engine.domain import PlexSession, UnusableValue
from cds.fhir_io import FhirReader
from cds.shared_redis import Breaker, SharedRedis
from cds.store import SqliteStore, postgres
from cds.store.postgres import PgStore
from cds.views.chart_links import RenderCache, keep_chart_link
from cds.views.link_store import (
    ChartInputs,
    MemoryLinkStore,
    RedisLinkStore,
    dumps_inputs,
    loads_inputs,
    open_link_store,
)
from tests.fhir_io.test_reader import BASE, PATIENT, TOKEN, FakeFhir, only_missing, settings
from tests.views.conftest import NOW, make_estimate

DEAD_REDIS = "redis://127.0.0.1:9/0"  # nothing listens on the discard port: connection refused


def _keys(redis_url: str, pattern: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return list(client.scan_iter(match=pattern))
    finally:
        client.close()


# ---------------------------------------------------------------- FHIR read cache


async def test_fhir_cache_is_shared_between_readers_through_redis(redis_url: str, redis_prefix: str) -> None:
    fake = FakeFhir()
    s = settings(redis_url=redis_url, redis_key_prefix=redis_prefix, cache_ttl_s=60)
    redis_a, redis_b = (
        SharedRedis.from_url(redis_url, redis_prefix),
        SharedRedis.from_url(redis_url, redis_prefix),
    )
    async with fake.client() as http:
        a, b = FhirReader(http, s, redis=redis_a), FhirReader(http, s, redis=redis_b)  # two replicas
        try:
            first = await a.load(PATIENT, only_missing(), BASE, TOKEN, 10)
            second = await b.load(PATIENT, only_missing(), BASE, TOKEN, 10)
            assert len(fake.requests) == 1
            assert (first.sources["medicationStatements"], second.sources["medicationStatements"]) == (
                "fhir",
                "cache",
            )
            assert first.facts == second.facts
            await b.load(PATIENT, only_missing(), BASE, "another-token", 10)  # another token: no hit
            assert len(fake.requests) == 2
        finally:
            await a.aclose()
            await b.aclose()
            await redis_a.aclose()
            await redis_b.aclose()
    keys = _keys(redis_url, redis_prefix + "*")
    assert len(keys) == 2 and all(k.startswith(f"{redis_prefix}fhir:".encode()) for k in keys)
    client = redis.Redis.from_url(redis_url)
    try:
        for key in keys:
            assert TOKEN.encode() not in key and PATIENT.encode() not in key
            assert 0 < client.pttl(key) <= 10_000  # min(cache_ttl_s=60, expires_in=10)
            value = json.loads(client.get(key))  # type: ignore[arg-type]
            assert isinstance(value, list) and value
            assert TOKEN not in json.dumps(value)
    finally:
        client.close()


async def test_fhir_cache_ttl_is_capped_by_the_setting(redis_url: str, redis_prefix: str) -> None:
    fake = FakeFhir()
    s = settings(redis_url=redis_url, redis_key_prefix=redis_prefix, cache_ttl_s=5)
    shared = SharedRedis.from_url(redis_url, redis_prefix)
    async with fake.client() as http:
        reader = FhirReader(http, s, redis=shared)
        try:
            await reader.load(PATIENT, only_missing(), BASE, TOKEN, 3600)
        finally:
            await reader.aclose()
            await shared.aclose()
    client = redis.Redis.from_url(redis_url)
    try:
        (key,) = _keys(redis_url, redis_prefix + "fhir:*")
        assert 0 < client.pttl(key) <= 5_000
    finally:
        client.close()


async def test_redis_outage_degrades_to_no_cache() -> None:
    fake = FakeFhir()
    s = settings(redis_url=DEAD_REDIS)
    dead = SharedRedis.from_url(DEAD_REDIS)
    async with fake.client() as http:
        reader = FhirReader(http, s, redis=dead)
        try:
            results = [await reader.load(PATIENT, only_missing(), BASE, TOKEN, 300) for _ in range(2)]
        finally:
            await reader.aclose()
            await dead.aclose()
    assert len(fake.requests) == 2  # every read went to the FHIR server
    assert all(r.sources["medicationStatements"] == "fhir" for r in results)
    assert results[0].facts == results[1].facts


async def test_in_process_cache_without_redis() -> None:
    fake = FakeFhir()
    async with fake.client() as http:
        reader = FhirReader(http, settings(redis_url=None, cache_ttl_s=60))
        try:
            first = await reader.load(PATIENT, only_missing(), BASE, TOKEN, 300)
            second = await reader.load(PATIENT, only_missing(), BASE, TOKEN, 300)
        finally:
            await reader.aclose()
    assert len(fake.requests) == 1
    assert (first.sources["medicationStatements"], second.sources["medicationStatements"]) == (
        "fhir",
        "cache",
    )


# ---------------------------------------------------------------- chart links


def _inputs() -> ChartInputs:
    estimate = make_estimate()
    estimate = estimate.__class__(
        **{
            **{f: getattr(estimate, f) for f in estimate.__dataclass_fields__},
            "unusable": (UnusableValue("natalizumab level", "no unit", "25", NOW, "Observation/x"),),
            "flags": ("measured",),
        }
    )
    sessions = (
        PlexSession(NOW - timedelta(days=4), plasma_volumes=1.5, source="Procedure/1"),
        PlexSession(NOW - timedelta(days=2), modality="immunoadsorption"),
    )
    return ChartInputs(estimate, sessions, NOW)


def test_chart_inputs_round_trip_through_json() -> None:
    inputs = _inputs()
    text = dumps_inputs(inputs)
    assert loads_inputs(text) == inputs
    assert isinstance(json.loads(text), dict)


async def test_chart_link_from_one_replica_opens_on_another(redis_url: str, redis_prefix: str) -> None:
    s = settings(redis_url=redis_url, redis_key_prefix=redis_prefix)
    redis_a, redis_b = (
        SharedRedis.from_url(redis_url, redis_prefix),
        SharedRedis.from_url(redis_url, redis_prefix),
    )
    a, b = open_link_store(s, redis_a), open_link_store(s, redis_b)
    assert isinstance(a, RedisLinkStore)
    inputs = _inputs()
    try:
        url = await keep_chart_link(
            a, "https://cds.example.org", inputs.estimate, inputs.sessions, inputs.now
        )
        assert url is not None and url.startswith("https://cds.example.org/charts/")
        cid = url.rsplit("/", 1)[1].removesuffix(".svg")
        found = await b.chart(cid)
        assert found == inputs
        local = MemoryLinkStore()
        local_cid = await local.put_chart(inputs)
        local_inputs = await local.chart(str(local_cid))
        assert local_inputs is not None  # the same chart as from the in-process store
        assert RenderCache().svg(cid, found) == RenderCache().svg(str(local_cid), local_inputs)
        assert await b.chart("unknown-id") is None
        client = redis.Redis.from_url(redis_url)
        try:
            assert 0 < client.pttl(f"{redis_prefix}chart:{cid}") <= 900_000
        finally:
            client.close()
    finally:
        await redis_a.aclose()
        await redis_b.aclose()


async def test_link_store_outage_gives_no_link_and_404_and_stops_asking() -> None:
    dead = SharedRedis.from_url(DEAD_REDIS)
    store = RedisLinkStore(dead)
    inputs = _inputs()
    try:
        assert await keep_chart_link(store, "http://x", inputs.estimate, inputs.sessions, inputs.now) is None
        assert dead.breaker.is_open  # the next calls do not wait for Redis
        assert await store.chart("anything") is None and await store.recall("anything") is None
    finally:
        await dead.aclose()


def test_breaker_spares_redis_for_its_pause_then_asks_again() -> None:
    now = [100.0]
    breaker = Breaker(retry_after_s=5.0, clock=lambda: now[0])
    assert not breaker.is_open
    breaker.trip(ConnectionError("refused"), "test")
    assert breaker.is_open
    now[0] += 4.9
    assert breaker.is_open
    now[0] += 0.2
    assert not breaker.is_open


def test_in_process_link_store_without_redis() -> None:
    assert isinstance(open_link_store(settings(redis_url=None), None), MemoryLinkStore)


# ---------------------------------------------------------------- feedback key


def _accepted(card: str, *ids: str, ts: str = "2026-01-05T10:00:00Z") -> dict[str, Any]:
    return {
        "card": card,
        "outcome": "accepted",
        "outcomeTimestamp": ts,
        "acceptedSuggestions": [{"id": i} for i in ids],
    }


async def _feedback_key_checks(store: Any) -> None:
    card = "9b1f1b8e-1111-4c3a-9d5e-3f0a5b1e2c01"
    # two suggestions of one card accepted in the same second: two rows
    assert await store.add_feedback("svc", [_accepted(card, "s1")]) == 1
    assert await store.add_feedback("svc", [_accepted(card, "s2")]) == 1
    # repeats (also of a batch, and with the ids in another order) stay idempotent
    assert await store.add_feedback("svc", [_accepted(card, "s1"), _accepted(card, "s2")]) == 0
    assert await store.add_feedback("svc", [_accepted(card, "s2", "s1")]) == 1
    assert await store.add_feedback("svc", [_accepted(card, "s1", "s2"), _accepted(card, "s1", "s2")]) == 0
    overridden = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-01-05T10:00:00Z"}
    assert await store.add_feedback("svc", [overridden, overridden]) == 1
    rows = await store.feedback()
    assert sorted(tuple(sorted(s["id"] for s in r["acceptedSuggestions"])) for r in rows) == [
        (),
        ("s1",),
        ("s1", "s2"),
        ("s2",),
    ]


async def test_feedback_key_includes_suggestions_sqlite(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cds.sqlite3")
    await store.start()
    try:
        await _feedback_key_checks(store)
    finally:
        await store.close()


async def test_feedback_key_includes_suggestions_postgres(pg_dsn: str) -> None:
    store = PgStore(pg_dsn)
    await store.start()
    try:
        await _feedback_key_checks(store)
    finally:
        await store.close()


_SQLITE_V0 = """
CREATE TABLE feedback (
    id INTEGER PRIMARY KEY,
    service_id TEXT NOT NULL,
    card TEXT NOT NULL,
    outcome TEXT NOT NULL,
    outcome_timestamp TEXT NOT NULL,
    accepted_suggestions TEXT,
    override_reason TEXT,
    received_at TEXT NOT NULL,
    UNIQUE (service_id, card, outcome, outcome_timestamp)
);
CREATE TABLE audit (id INTEGER PRIMARY KEY, at TEXT NOT NULL, event TEXT NOT NULL);
INSERT INTO feedback VALUES (1, 'svc', 'c1', 'accepted', '2026-01-05T10:00:00Z', '[{"id": "s1"}]', NULL,
    '2026-01-05T10:00:01Z');
INSERT INTO feedback VALUES (2, 'svc', 'c1', 'overridden', '2026-01-05T10:00:00Z', NULL, '{"userComment": "x"}',
    '2026-01-05T10:00:01Z');
"""


async def test_sqlite_table_of_the_old_key_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "cds.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(_SQLITE_V0)
    store = SqliteStore(path)
    await store.start()
    try:
        before = await store.feedback()
        assert [(r["card"], r["outcome"], r["acceptedSuggestions"]) for r in before] == [
            ("c1", "accepted", [{"id": "s1"}]),
            ("c1", "overridden", []),
        ]
        assert await store.add_feedback("svc", [_accepted("c1", "s1")]) == 0  # an old row, repeated
        assert await store.add_feedback("svc", [_accepted("c1", "s2")]) == 1  # now a row of its own
    finally:
        await store.close()
    store = SqliteStore(path)  # a second start does not migrate again
    await store.start()
    try:
        assert len(await store.feedback()) == 3
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)


async def test_postgres_version_1_table_is_migrated(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:1])
    old = PgStore(pg_dsn)
    await old.start()
    try:
        assert await old.add_feedback("svc", [_accepted("c1", "s1")]) == 1
        assert await old.add_feedback("svc", [_accepted("c1", "s2")]) == 0  # the collapse being fixed
    finally:
        await old.close()
    monkeypatch.undo()
    new = PgStore(pg_dsn)
    await new.start()  # applies the later versions
    try:
        assert await new.schema_version() == len(postgres.MIGRATIONS)
        assert await new.add_feedback("svc", [_accepted("c1", "s1")]) == 0  # the old row is still the key
        assert await new.add_feedback("svc", [_accepted("c1", "s2")]) == 1
        assert len(await new.feedback()) == 2
        assert await new.migrate() == []
    finally:
        await new.close()
