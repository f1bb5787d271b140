"""The jti replay store, in memory and on the real Redis at 127.0.0.1:6379 (skipped when absent)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from cds.replay import MemoryReplayStore, RedisReplayStore, ReplayStore, ReplayStoreFull, open_replay_store
from cds.settings import Settings
from cds.shared_redis import SharedRedis

REDIS_URL = "redis://127.0.0.1:6379/15"


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.3):
            return True
    except OSError:
        return False


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ReplayStore]:
    if request.param == "memory":
        s: ReplayStore = MemoryReplayStore(ttl_s=3600)
    else:
        if not _redis_up():
            pytest.skip("Redis is not reachable on 127.0.0.1:6379")
        shared = SharedRedis.from_url(REDIS_URL)
        s = RedisReplayStore(shared)
    yield s
    await s.close()
    if request.param == "redis":
        await shared.aclose()


def exp_in(seconds: float) -> int:
    return int(time.time() + seconds)


async def test_first_use_then_replay(store: ReplayStore) -> None:
    jti = uuid.uuid4().hex
    assert await store.first_use("https://a.example", jti, exp_in(300))
    assert not await store.first_use("https://a.example", jti, exp_in(300))


async def test_same_jti_from_another_issuer_is_separate(store: ReplayStore) -> None:
    jti = uuid.uuid4().hex
    assert await store.first_use("https://a.example", jti, exp_in(300))
    assert await store.first_use("https://b.example", jti, exp_in(300))


async def test_concurrent_claims_admit_exactly_one(store: ReplayStore) -> None:
    jti = uuid.uuid4().hex
    results = await asyncio.gather(
        *(store.first_use("https://a.example", jti, exp_in(300)) for _ in range(20))
    )
    assert results.count(True) == 1


async def test_redis_entry_expires_at_exp_and_holds_no_raw_jti() -> None:
    if not _redis_up():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    import redis.asyncio as aioredis

    shared = SharedRedis.from_url(REDIS_URL)
    store = RedisReplayStore(shared)
    jti = "visible-" + uuid.uuid4().hex
    exp = exp_in(120)
    assert await store.first_use("https://a.example", jti, exp)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k.decode() async for k in client.scan_iter(match="cds:jti:*")]
        assert keys and not any(jti in k for k in keys)
        assert _key(store, jti) in keys
        assert abs(await client.expiretime(_key(store, jti)) - exp) <= 1
    finally:
        await client.aclose()
        await shared.aclose()


def _key(store: RedisReplayStore, jti: str) -> str:
    from cds.replay import replay_key

    return store.prefix + replay_key("https://a.example", jti).hex()


async def test_redis_down_raises_so_the_token_is_refused() -> None:
    dead = SharedRedis.from_url("redis://127.0.0.1:9/0", timeout_s=0.2)
    store = RedisReplayStore(dead)
    import redis.exceptions

    for _ in range(2):  # the second time too: the replay store asks Redis every time (no breaker)
        with pytest.raises(redis.exceptions.RedisError):
            await store.first_use("https://a.example", "x", exp_in(60))
    await dead.aclose()


async def test_authenticator_fails_closed_when_the_store_fails() -> None:
    import httpx
    from starlette.requests import Request

    from cds.auth import Authenticator
    from cds.errors import ReplayStoreUnavailable
    from cds.settings import IssuerConfig
    from tests.support.jwks import SigningKey

    key = SigningKey.generate("ES384")
    settings = Settings(
        _env_file=None,
        auth="jwt",
        public_base_url="https://cds.example.org",
        jwt_issuers={"https://a.example": IssuerConfig(jwks={"keys": [key.public_jwk]})},
    )
    url = "https://cds.example.org/cds-services"
    token = key.token(iss="https://a.example", aud=url)
    req = Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"authorization", f"Bearer {token}".encode())],
        }
    )
    async with httpx.AsyncClient() as http:
        dead = SharedRedis.from_url("redis://127.0.0.1:9/0", timeout_s=0.2)
        auth = Authenticator(settings, http, replay=RedisReplayStore(dead))
        with pytest.raises(ReplayStoreUnavailable):  # refused, as a 503 (our fault), not a 401 (issue 18)
            await auth.check(req, url)
        await auth.close()
        await dead.aclose()


async def test_memory_store_forgets_after_its_ttl() -> None:
    store = MemoryReplayStore(ttl_s=0.05)
    assert await store.first_use("i", "j", exp_in(1))
    await asyncio.sleep(0.1)
    assert await store.first_use("i", "j", exp_in(1))


async def test_memory_store_frees_an_id_at_its_own_expiry_not_the_store_ttl() -> None:
    """A 30 s EHR token must not hold a slot for the whole hour-long store TTL."""
    store = MemoryReplayStore(ttl_s=3600, maxsize=1)
    assert await store.first_use("i", "short", int(time.time()))  # expires now: kept ~1 s at most
    with pytest.raises(ReplayStoreFull):
        await store.first_use("i", "other", exp_in(60))
    await asyncio.sleep(1.1)
    assert await store.first_use("i", "other", exp_in(60))


async def test_memory_store_refuses_rather_than_evicting_live_ids() -> None:
    store = MemoryReplayStore(ttl_s=60, maxsize=3)
    for jti in "abc":
        assert await store.first_use("i", jti, exp_in(60))
    with pytest.raises(ReplayStoreFull):
        await store.first_use("i", "d", exp_in(60))
    assert not await store.first_use("i", "a", exp_in(60))


def test_store_is_chosen_by_redis_url() -> None:
    assert isinstance(open_replay_store(Settings(_env_file=None, redis_url=None)), MemoryReplayStore)
    memory = open_replay_store(
        Settings(_env_file=None, redis_url=None, jwt_max_lifetime_s=600, jwt_clock_skew_s=60)
    )
    assert isinstance(memory, MemoryReplayStore) and memory.ttl_s == 720
    with_redis = Settings(_env_file=None, redis_url=REDIS_URL)
    shared = SharedRedis.from_url(REDIS_URL)
    assert isinstance(open_replay_store(with_redis, shared), RedisReplayStore)
    with pytest.raises(ValueError):  # never a per-worker store when a shared one was asked for
        open_replay_store(with_redis, None)
