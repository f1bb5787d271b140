"""The in-process link store: random opaque ids, expiry, bounded size; the chart routes answer 404 after
expiry. (Redis: tests/deploy/test_shared_state.py.)"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from cds.views.chart_links import RenderCache, keep_chart_link, router
from cds.views.link_store import ChartInputs, MemoryLinkStore
from tests.support.servers import serve_asgi
from tests.views.conftest import make_estimate


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def inputs(estimate, sessions, now) -> ChartInputs:
    return ChartInputs(estimate, sessions, now)


async def test_ids_are_random_and_url_safe(inputs):
    store = MemoryLinkStore(ttl_s=60, max_entries=10)
    ids = {await store.put_chart(inputs) for _ in range(5)}
    assert len(ids) == 5
    for cid in ids:
        assert cid is not None and re.fullmatch(r"[A-Za-z0-9_-]{43}", cid)
        assert await store.chart(cid) is inputs


async def test_a_chart_expires_after_its_ttl(inputs):
    clock = Clock()
    store = MemoryLinkStore(ttl_s=60, max_entries=10, clock=clock)
    cid = await store.put_chart(inputs)
    assert cid is not None
    clock.t += 59
    assert await store.chart(cid) is inputs
    clock.t += 2
    assert await store.chart(cid) is None and store.live_charts() == 0


async def test_a_full_store_gives_no_new_link_and_keeps_the_live_ones(inputs):
    """Full of live links: no new link (None), and no live link evicted before its time (issue 18)."""
    store = MemoryLinkStore(ttl_s=60, max_entries=3)
    ids = [await store.put_chart(inputs) for _ in range(5)]
    assert store.live_charts() == 3
    assert ids[3] is None and ids[4] is None
    assert all([await store.chart(cid) is inputs for cid in ids[:3] if cid is not None])


def test_rejects_bad_limits():
    with pytest.raises(ValueError):
        MemoryLinkStore(ttl_s=0, max_entries=1)


async def test_a_memory_is_recalled_until_its_own_ttl():
    clock = Clock()
    store = MemoryLinkStore(ttl_s=900, max_entries=10, clock=clock)
    await store.remember("k", "a:1 b:2", ttl_s=30)
    await store.remember("gone", "x", ttl_s=0)  # no lifetime: not kept
    assert await store.recall("k") == "a:1 b:2" and store.memories() == {"k": "a:1 b:2"}
    clock.t += 31
    assert await store.recall("k") is None and store.memories() == {}


async def test_chart_link_is_absolute_without_phi(estimate, sessions, now):
    store = MemoryLinkStore()
    url = await keep_chart_link(store, "https://cds.example.org/", estimate, sessions, now)
    assert url is not None
    m = re.fullmatch(r"https://cds\.example\.org/charts/([A-Za-z0-9_-]{43})\.svg", url)
    assert m and await store.chart(m.group(1)) is not None
    nothing = make_estimate(levels=(), n_proj=0, basis="none")
    assert await keep_chart_link(store, "http://x", nothing, (), now) is None


def test_chart_routes_answer_until_the_link_expires(inputs):
    clock = Clock()
    store = MemoryLinkStore(ttl_s=30, max_entries=10, clock=clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, object]]:
        yield {"links": store, "chart_renders": RenderCache()}  # what cds.app's lifespan hands the routes

    app = FastAPI(lifespan=lifespan)
    app.include_router(router)
    cid = asyncio.run(store.put_chart(inputs))
    with serve_asgi(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        r = client.get(f"/charts/{cid}.svg")
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
        assert r.text.startswith("<svg") and r.headers["x-content-type-options"] == "nosniff"
        r = client.get(f"/charts/{cid}.png")
        assert r.status_code in (200, 503)
        if r.status_code == 200:
            assert r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
        assert client.get("/charts/nope.svg").status_code == 404
        clock.t += 31
        assert client.get(f"/charts/{cid}.svg").status_code == 404
        assert client.get(f"/charts/{cid}.png").status_code == 404
