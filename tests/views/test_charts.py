"""Chart store: random opaque ids, expiry, bounded size; routes answer 404 after expiry."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from cds.views.charts import ChartInputs, ChartStore, chart_url, router
from tests.views.conftest import make_estimate


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def inputs(estimate, sessions, now) -> ChartInputs:
    return ChartInputs(estimate, sessions, now)


def test_ids_are_random_and_url_safe(inputs):
    store = ChartStore(ttl_s=60, max_entries=10)
    ids = {store.put(inputs) for _ in range(5)}
    assert len(ids) == 5
    for cid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cid)
        assert store.get(cid) is inputs


def test_expiry(inputs):
    clock = Clock()
    store = ChartStore(ttl_s=60, max_entries=10, clock=clock)
    cid = store.put(inputs)
    clock.t += 59
    assert store.get(cid) is inputs
    clock.t += 2
    assert store.get(cid) is None and store.svg(cid) is None and len(store) == 0


def test_bounded(inputs):
    """Full of live links: no new link (None), and no live link evicted before its time (issue 18)."""
    store = ChartStore(ttl_s=60, max_entries=3)
    ids = [store.put(inputs) for _ in range(5)]
    assert len(store) == 3
    assert ids[3] is None and ids[4] is None
    assert all(store.get(cid) is inputs for cid in ids[:3] if cid is not None)


def test_rejects_bad_limits():
    with pytest.raises(ValueError):
        ChartStore(ttl_s=0, max_entries=1)


def test_chart_url_is_absolute_without_phi(estimate, sessions, now):
    store = ChartStore()
    url = chart_url(store, "https://cds.example.org/", estimate, sessions, now)
    assert url is not None
    m = re.fullmatch(r"https://cds\.example\.org/charts/([A-Za-z0-9_-]{43})\.svg", url)
    assert m and store.get(m.group(1)) is not None
    assert chart_url(store, "http://x", make_estimate(levels=(), n_proj=0, basis="none"), (), now) is None


async def test_routes(inputs):
    clock = Clock()
    app = FastAPI()
    app.state.chart_store = store = ChartStore(ttl_s=30, max_entries=10, clock=clock)
    app.include_router(router)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    cid = store.put(inputs)
    r = await client.get(f"/charts/{cid}.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert r.text.startswith("<svg") and r.headers["x-content-type-options"] == "nosniff"
    r = await client.get(f"/charts/{cid}.png")
    assert r.status_code in (200, 503)
    if r.status_code == 200:
        assert r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    assert (await client.get("/charts/nope.svg")).status_code == 404
    clock.t += 31
    assert (await client.get(f"/charts/{cid}.svg")).status_code == 404
    assert (await client.get(f"/charts/{cid}.png")).status_code == 404
