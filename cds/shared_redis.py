"""The one Redis client of a worker (CDS_REDIS_URL), made in the app's lifespan, and its circuit breaker.

Everything the workers and replicas share, besides the database, lives in it, each kind under its own
key prefix (`<redis_key_prefix><kind>:`):

    jti:                  cds.replay          a token that cannot be checked is refused (503)
    fhir:                 cds.fhir_cache      a Redis failure is a cache miss
    chart: page: shown:   cds.views.link_store  a failure is a card without its link, or no memory

One `redis.asyncio.Redis` (one connection pool) with short timeouts, so an outage costs a call at most
`TIMEOUT_S`. `Breaker`: after a failure the callers that can do without Redis (the read cache, the link
store, the order-sign memory) do not ask it again for `retry_after_s`, so an outage costs one timeout
every few seconds, not one per call. The replay store does not consult the breaker: each token is
checked against Redis, so tokens are accepted again as soon as Redis answers (tests/security/
test_redis_outage.py), and refused (503) while it does not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cds.settings import Settings

__all__ = ["REDIS_ERRORS", "TIMEOUT_S", "Breaker", "SharedRedis", "connect_redis"]

log = logging.getLogger("cds.redis")

# What "Redis is away" looks like: refused, reset, timed out, or an error reply.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

TIMEOUT_S = 0.5  # connect and per command: a hook's whole FHIR deadline is a few seconds


class Breaker:
    """Open for `retry_after_s` after a failure: while open, Redis is not asked (callers degrade)."""

    def __init__(self, retry_after_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._closed_at = float("-inf")  # when Redis may be asked again

    @property
    def is_open(self) -> bool:
        return self._clock() < self._closed_at

    def trip(self, exc: BaseException, what: str) -> None:
        """Record a failure of `what` (a short phrase for the log: the error's class only, never a key)."""
        self._closed_at = self._clock() + self.retry_after_s
        log.warning(
            "redis unavailable (%s): %s; not asked again for %.0f s",
            type(exc).__name__,
            what,
            self.retry_after_s,
        )


@dataclass
class SharedRedis:
    """The client, the key prefix every key starts with, and the breaker the tolerant callers share."""

    client: aioredis.Redis
    prefix: str = "cds:"
    breaker: Breaker = field(default_factory=Breaker)

    @classmethod
    def from_url(cls, url: str, prefix: str = "cds:", *, timeout_s: float = TIMEOUT_S) -> SharedRedis:
        """A client for `url` (no connection is made until the first command)."""
        client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(client, prefix)

    async def get(self, key: str, what: str) -> bytes | None:
        """`GET key`, or None when the breaker is open or Redis fails (which opens it)."""
        if self.breaker.is_open:
            return None
        try:
            raw: bytes | str | None = await self.client.get(key)
        except REDIS_ERRORS as exc:
            self.breaker.trip(exc, what)
            return None
        return raw.encode() if isinstance(raw, str) else raw  # str only with decode_responses

    async def set(self, key: str, value: str | bytes, ttl_s: float, what: str) -> bool:
        """`SET key value PX ttl`: True when stored; False when the breaker is open or Redis fails."""
        ms = int(ttl_s * 1000)
        if ms <= 0 or self.breaker.is_open:
            return False
        try:
            await self.client.set(key, value, px=ms)
        except REDIS_ERRORS as exc:
            self.breaker.trip(exc, what)
            return False
        return True

    async def aclose(self) -> None:
        await self.client.aclose()


def connect_redis(settings: Settings) -> SharedRedis | None:
    """The shared client when CDS_REDIS_URL is set, else None (each store then keeps its state in process)."""
    if not settings.redis_url:
        return None
    return SharedRedis.from_url(settings.redis_url, settings.redis_key_prefix)
