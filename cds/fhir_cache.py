"""The FHIR read cache (I/O side, used by cds/fhir_io.py's FhirReader): a successful search kept under
(fhirServer, query, SHA-256 of the token), in process (MemoryReadCache) or in Redis (RedisReadCache, on
the worker's one shared client, cds.shared_redis)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from cachetools import TTLCache

from cds.settings import Settings
from cds.shared_redis import SharedRedis

__all__ = ["CacheKey", "MemoryReadCache", "ReadCache", "RedisReadCache", "json_loads", "open_read_cache"]


CacheKey = tuple[str, str, str]  # (fhirServer, query, sha256 of the token): never the raw token


class ReadCache:
    """The FHIR read cache seam: `get` a fresh entry or None, `set` with a TTL in seconds."""

    async def get(self, key: CacheKey) -> list[Any] | None:
        raise NotImplementedError

    async def set(self, key: CacheKey, resources: list[Any], ttl: float) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


# Python dicts of parsed FHIR JSON take about 5 times the JSON's bytes (measured: a 30 KB prefetch, 143 KiB)
_PY_BYTES_PER_JSON_BYTE = 5


def resident_estimate(resources: list[Any]) -> int:
    try:  # orjson: about a tenth of json.dumps's time (NaN written as null does not matter to a size)
        return len(orjson.dumps(resources, default=str)) * _PY_BYTES_PER_JSON_BYTE
    except TypeError:  # what orjson refuses (ints beyond 64 bits, lone surrogates, non-str keys)
        pass
    try:
        return len(json.dumps(resources, separators=(",", ":"), default=str)) * _PY_BYTES_PER_JSON_BYTE
    except (TypeError, ValueError):
        return 1 << 20


def json_loads(raw: bytes | bytearray | str) -> Any:
    """`json.loads(raw)`, about twice as fast: orjson reads what it can, and what it refuses (NaN and
    Infinity, lone surrogates, invalid JSON) goes to json.loads, which accepts or rejects it as before.
    One difference: orjson reads an integer beyond 64 bits as a float (cds/hooks/models.py from_body)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


class MemoryReadCache(ReadCache):
    """In-process (one worker): a TTLCache of (expires, resources, size) on the reader's clock, bounded
    both by entries and by estimated resident bytes (`max_bytes`), so a new token per request cannot
    grow a worker past its memory budget; the least recently used entries go first."""

    def __init__(
        self, maxsize: int, ttl: float, clock: Callable[[], float], max_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self._clock = clock
        self._maxsize = maxsize
        self._entries: TTLCache[CacheKey, tuple[float, list[Any], int]] = TTLCache(
            maxsize=max_bytes, ttl=ttl, timer=clock, getsizeof=lambda v: v[2]
        )

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> Iterable[CacheKey]:
        return self._entries.keys()

    async def get(self, key: CacheKey) -> list[Any] | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > self._clock() else None

    async def set(self, key: CacheKey, resources: list[Any], ttl: float) -> None:
        size = resident_estimate(resources)
        if size > self._entries.maxsize:
            return  # larger than the whole budget: not cached
        self._entries[key] = (self._clock() + ttl, resources, size)
        while len(self._entries) > self._maxsize:
            self._entries.popitem()

    async def aclose(self) -> None:
        self._entries.clear()


class RedisReadCache(ReadCache):
    """Shared by every worker and replica: `SET <prefix>fhir:<sha256(server, query, token digest)>
    <resources JSON> PX <ttl>`. The key names neither the patient nor the token. Redis failing is a
    miss, never an error: the read goes to the FHIR server, and the shared breaker keeps Redis from
    being asked again for a few seconds (so an outage costs one short timeout, not one per read).
    """

    def __init__(self, redis: SharedRedis) -> None:
        self._redis = redis
        self.prefix = redis.prefix + "fhir:"

    def key(self, key: CacheKey) -> str:
        return self.prefix + hashlib.sha256("\x00".join(key).encode()).hexdigest()

    async def get(self, key: CacheKey) -> list[Any] | None:
        raw = await self._redis.get(self.key(key), "fhir read cache: reading without it")
        if raw is None:
            return None
        try:
            value = json_loads(raw)
        except (ValueError, RecursionError):
            return None
        return value if isinstance(value, list) else None

    async def set(self, key: CacheKey, resources: list[Any], ttl: float) -> None:
        if ttl <= 0 or self._redis.breaker.is_open:
            return  # not even serialised while Redis is away
        text = json.dumps(resources, separators=(",", ":"))
        await self._redis.set(self.key(key), text, ttl, "fhir read cache: reading without it")

    # aclose: nothing of its own to close (the client is the lifespan's)


def open_read_cache(
    settings: Settings, clock: Callable[[], float], redis: SharedRedis | None = None
) -> ReadCache:
    """Redis when the lifespan made the shared client (CDS_REDIS_URL), else in-process."""
    if redis is not None:
        return RedisReadCache(redis)
    ttl = int(settings.cache_ttl_s)
    return MemoryReadCache(settings.cache_max_entries, ttl, clock, settings.cache_max_mb * 1024 * 1024)
