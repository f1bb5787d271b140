"""Issue 18 defect 10: a chart link lives its whole 15 minutes, however many calls come after it (no
live link is evicted; a full store hands out no link), and each rendered image is cached per link, so
many clients opening one link render it once.

The store directly, then the real service over HTTP (in-memory store and a Redis of the test's own)."""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds import demo
from cds.app import create_app
from cds.settings import Settings
from cds.views.chart_links import RenderCache
from cds.views.link_store import ChartInputs, MemoryLinkStore
from tests.security.redis_proc import REDIS_SERVER, own_redis
from tests.support.servers import serve_asgi

SELECT = "/cds-services/pml-plex-select"
LINK = re.compile(r"/charts/([A-Za-z0-9_-]{43})\.svg$")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_a_link_outlives_2048_newer_calls_within_its_ttl(
    estimate: Any, sessions: Any, now: datetime
) -> None:
    clock = Clock()
    inputs = ChartInputs(estimate, sessions, now)
    store = MemoryLinkStore(ttl_s=900, max_entries=2048, clock=clock)
    first = await store.put_chart(inputs)
    assert first is not None
    later = []
    for _ in range(2048):
        clock.t += 0.1  # 2,048 calls in under 4 minutes
        later.append(await store.put_chart(inputs))
    assert await store.chart(first) is inputs  # still inside its 15 minutes
    handed_out = [cid for cid in later if cid is not None]
    assert all([await store.chart(cid) is inputs for cid in handed_out])  # every link given still opens
    assert later[-1] is None  # the store is full: the newest call went without a link
    clock.t = 1000.0 + 900.5  # the first link has expired: room again
    assert await store.chart(first) is None
    assert await store.put_chart(inputs) is not None


def _hook_body() -> dict[str, Any]:
    patient = demo.patient("high-level", datetime.now(UTC))
    body: dict[str, Any] = demo.hook_request(
        patient,
        "order-select",
        prefetch=True,
        settings=Settings(_env_file=None),  # type: ignore[call-arg]
    )
    return body


def _chart_path(resp: httpx.Response) -> str | None:
    assert resp.status_code == 200, resp.text
    for card in resp.json()["cards"]:
        for link in card.get("links", []):
            if m := LINK.search(link["url"]):
                return m.group(0)
    return None


@pytest.fixture
def small_store_app(tmp_path: Path) -> Iterator[tuple[str, RenderCache]]:
    settings = Settings(auth="off", state_dir=tmp_path, chart_max_entries=3, _env_file=None)  # type: ignore[call-arg]
    renders = RenderCache()
    with serve_asgi(create_app(settings, chart_renders=renders)) as base:
        yield base, renders


def test_full_store_gives_no_link_and_keeps_the_old_ones(small_store_app: tuple[str, RenderCache]) -> None:
    base, _ = small_store_app
    with httpx.Client(base_url=base, timeout=20) as client:
        paths = [_chart_path(client.post(SELECT, json=_hook_body())) for _ in range(5)]
        assert all(paths[:3]) and paths[3] is None and paths[4] is None, paths
        for path in paths[:3]:
            assert client.get(str(path)).status_code == 200


def _fetch_concurrently(base: str, path: str, n: int = 16) -> list[httpx.Response]:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: httpx.get(base + path, timeout=60), range(n)))


def _assert_rendered_once(base: str, renders: RenderCache) -> None:
    with httpx.Client(base_url=base, timeout=20) as client:
        path = _chart_path(client.post(SELECT, json=_hook_body()))
    assert path is not None
    for fmt in ("svg", "png"):
        before = renders.renders
        answers = _fetch_concurrently(base, path[: -len("svg")] + fmt)
        assert {r.status_code for r in answers} == {200}
        assert len({r.content for r in answers}) == 1
        assert renders.renders == before + 1, f"{fmt} rendered {renders.renders - before} times"


def test_each_image_is_rendered_once_per_link(small_store_app: tuple[str, RenderCache]) -> None:
    base, renders = small_store_app
    _assert_rendered_once(base, renders)


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
def test_each_image_is_rendered_once_per_link_with_redis(tmp_path: Path) -> None:
    with own_redis(tmp_path) as redis:
        settings = Settings(auth="off", state_dir=tmp_path, redis_url=redis.url, _env_file=None)  # type: ignore[call-arg]
        renders = RenderCache()
        with serve_asgi(create_app(settings, chart_renders=renders)) as base:
            _assert_rendered_once(base, renders)
