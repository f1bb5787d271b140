"""The `jti` replay store: a JWT id is accepted once per issuer, and refused until the token expires.

CONTRACT:
    open_replay_store(settings, redis) -> ReplayStore   redis: the lifespan's shared client, or None
    await store.first_use(iss, jti, expires_at) -> bool   True the first time, False on a replay
    await store.close()

Keys are SHA-256 digests of (iss, jti), never the raw values. Entries live until `expires_at`
(the token's `exp` plus the clock skew the verifier allows), so a token can never be replayed while
it would still verify. One worker: `MemoryReplayStore` (cachetools TTLCache). Several workers or
replicas must share it: set CDS_REDIS_URL and `RedisReplayStore` does `SET key 1 NX EXAT expires_at`
on the worker's one Redis client (cds.shared_redis). Store errors propagate: the authenticator treats
them as "cannot tell", and refuses the token (503). It does not consult the shared breaker: every token
is checked, so tokens are accepted again the moment Redis answers.
"""

from __future__ import annotations

import hashlib
import time
from typing import Protocol

from cachetools import TLRUCache

from cds.settings import Settings
from cds.shared_redis import SharedRedis

__all__ = ["MemoryReplayStore", "RedisReplayStore", "ReplayStore", "ReplayStoreFull", "open_replay_store"]


class ReplayStoreFull(RuntimeError):
    """The in-memory store holds its maximum of unexpired ids; new tokens are refused, not old ids evicted."""


class ReplayStore(Protocol):
    async def first_use(self, iss: str, jti: str, expires_at: int) -> bool: ...
    async def close(self) -> None: ...


def replay_key(iss: str, jti: str) -> bytes:
    return hashlib.sha256(iss.encode() + b"\x00" + jti.encode()).digest()


class MemoryReplayStore:
    """Per-process store. Each id lives until its own `expires_at` (the verifier passes `exp` + skew),
    capped at the longest a token can still verify: max lifetime + 2 x skew
    (`exp - now <= (exp - iat) + (iat - now) <= max_lifetime + skew`, and it verifies until `exp + skew`).
    Short-lived EHR tokens (30-300 s) therefore free their slot in seconds, not after an hour.
    """

    def __init__(self, ttl_s: float, maxsize: int = 1_000_000) -> None:
        self.ttl_s = ttl_s
        # value = wall-clock expiry; TLRUCache drops each entry at its own time
        self._seen: TLRUCache[bytes, float] = TLRUCache(
            maxsize=maxsize, ttu=lambda _key, expiry, _now: expiry, timer=time.time
        )

    async def first_use(self, iss: str, jti: str, expires_at: int) -> bool:
        key = replay_key(iss, jti)
        if key in self._seen:
            return False
        if len(self._seen) >= self._seen.maxsize:
            self._seen.expire()
            if len(self._seen) >= self._seen.maxsize:  # evicting a live id would allow its replay
                raise ReplayStoreFull("jti replay store is full")
        now = time.time()
        self._seen[key] = min(max(float(expires_at), now + 1), now + self.ttl_s)
        return True

    async def close(self) -> None:
        self._seen.clear()


class RedisReplayStore:
    """Shared store: `SET <prefix>jti:<digest> 1 NX EXAT <expires_at>` is atomic across workers."""

    def __init__(self, redis: SharedRedis) -> None:
        self._client = redis.client
        self.prefix = redis.prefix + "jti:"  # CDS_REDIS_KEY_PREFIX: several services on one Redis

    async def first_use(self, iss: str, jti: str, expires_at: int) -> bool:
        key = self.prefix + replay_key(iss, jti).hex()
        expires_at = max(int(expires_at), int(time.time()) + 1)
        return bool(await self._client.set(key, 1, nx=True, exat=expires_at))

    async def close(self) -> None:
        return None  # the client is the lifespan's, closed there


def open_replay_store(settings: Settings, redis: SharedRedis | None = None) -> ReplayStore:
    """Redis when the lifespan made the shared client (CDS_REDIS_URL), else per-process memory."""
    if redis is not None:
        return RedisReplayStore(redis)
    if settings.redis_url:  # never a silent per-worker store when a shared one was asked for
        raise ValueError("CDS_REDIS_URL is set: the replay store needs the shared client (connect_redis)")
    return MemoryReplayStore(ttl_s=settings.jwt_max_lifetime_s + 2 * settings.jwt_clock_skew_s)
