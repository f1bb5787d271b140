"""The in-process FHIR read cache is bounded by estimated bytes as well as by entries."""

from __future__ import annotations

import asyncio

from cds.fhir_cache import MemoryReadCache, resident_estimate


def _obs(i: int) -> dict[str, object]:
    return {"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "x" * 200}}


def test_bytes_bound_drops_least_recently_used() -> None:
    async def run() -> None:
        resources = [_obs(i) for i in range(20)]
        size = resident_estimate(resources)
        cache = MemoryReadCache(maxsize=10_000, ttl=60, clock=lambda: 0.0, max_bytes=size * 3)
        for n in range(10):  # a new token per request: new keys
            await cache.set(("s", "q", f"t{n}"), resources, 60)
        assert len(cache) == 3
        assert await cache.get(("s", "q", "t9")) == resources
        assert await cache.get(("s", "q", "t0")) is None

    asyncio.run(run())


def test_entry_bound_still_holds_and_oversized_is_not_cached() -> None:
    async def run() -> None:
        cache = MemoryReadCache(maxsize=2, ttl=60, clock=lambda: 0.0, max_bytes=1 << 30)
        for n in range(5):
            await cache.set(("s", "q", f"t{n}"), [_obs(n)], 60)
        assert len(cache) == 2
        tiny = MemoryReadCache(maxsize=10, ttl=60, clock=lambda: 0.0, max_bytes=100)
        await tiny.set(("s", "q", "t"), [_obs(i) for i in range(50)], 60)
        assert len(tiny) == 0

    asyncio.run(run())
