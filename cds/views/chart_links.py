"""The estimate card's chart link and its routes: `/charts/{id}.svg` and `/charts/{id}.png`.

`keep_chart_link` (in the hook) keeps the chart's inputs in the link store (cds.views.link_store) and
returns `{public_base_url}/charts/{id}.svg`; the image is drawn on GET, not in the hook, so a hook pays
only for the store's `put_chart`. The chart routes are outside JWT (clarifications.md): possession of
the unguessable id is the access. Each drawn image is kept per link and format (`RenderCache`, bounded
in bytes) and drawn one at a time per process, so many clients opening one link draw it once (16
clients on one PNG link took the hook p50 from 46 to 260 ms). Drawing runs in the thread pool.

Wiring (cds/app.py): the lifespan state holds `links` (the LinkStore) and `chart_renders` (the
RenderCache); `router` serves the charts and, included from cds.views.pages, the cards' full pages.
"""

from __future__ import annotations

import threading
from datetime import datetime

from cachetools import LRUCache
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cds.engine.domain import PlexEstimate, PlexSession
from cds.views.level_chart import render_png, render_svg
from cds.views.link_store import ChartInputs, LinkStore, link_store
from cds.views.pages import router as pages_router

__all__ = ["RenderCache", "chart_href", "keep_chart_link", "router"]


class RenderCache:
    """Drawn charts by (id, format), at most `max_bytes` of them (least recently used dropped first).

    One drawing at a time per process: one takes 5 ms (SVG) to 350 ms (PNG) of CPU, and a link is
    open to anyone who has it, so concurrent requests wait for the one drawing instead of each doing it.
    """

    def __init__(self, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._images: LRUCache[tuple[str, str], str | bytes] = LRUCache(maxsize=max_bytes, getsizeof=len)
        self._lock = threading.Lock()  # the cache
        self._render_lock = threading.Lock()  # one drawing at a time
        self.renders = 0  # how many drawings this process did (tests, diagnostics)

    def svg(self, cid: str, inputs: ChartInputs) -> str:
        image = self._image(cid, "svg", inputs)
        return image if isinstance(image, str) else image.decode()

    def png(self, cid: str, inputs: ChartInputs) -> bytes:
        image = self._image(cid, "png", inputs)
        return image if isinstance(image, bytes) else image.encode()

    def _cached(self, key: tuple[str, str]) -> str | bytes | None:
        with self._lock:
            return self._images.get(key)

    def _image(self, cid: str, fmt: str, inputs: ChartInputs) -> str | bytes:
        key = (cid, fmt)
        if (found := self._cached(key)) is not None:
            return found
        with self._render_lock:
            if (found := self._cached(key)) is not None:
                return found  # drawn while this request waited
            render = render_svg if fmt == "svg" else render_png
            image: str | bytes = render(inputs.estimate, inputs.sessions, inputs.now)
            self.renders += 1
        with self._lock:
            if len(image) <= self._images.maxsize:
                self._images[key] = image
        return image


def _drawable(estimate: PlexEstimate) -> bool:
    return bool(estimate.levels_used or estimate.adjusted_level_ug_per_ml is not None or estimate.projection)


def chart_href(base_url: str, cid: str, fmt: str = "svg") -> str:
    return f"{base_url.rstrip('/')}/charts/{cid}.{fmt}"


async def keep_chart_link(
    store: LinkStore,
    base_url: str,
    estimate: PlexEstimate,
    sessions: tuple[PlexSession, ...],
    now: datetime,
    fmt: str = "svg",
) -> str | None:
    """Keep the chart's inputs; the absolute URL of its image, or None when there is nothing to draw or
    the store could not keep it (no link rather than one that would 404)."""
    if not _drawable(estimate):
        return None
    cid = await store.put_chart(ChartInputs(estimate, tuple(sessions), now))
    return None if cid is None else chart_href(base_url, cid, fmt)


def _renders(request: Request) -> RenderCache:
    renders: RenderCache = request.state.chart_renders  # lifespan state (cds/app.py)
    return renders


router = APIRouter(tags=["charts"])
router.include_router(pages_router)  # the cards' full pages live in the same store

_HEADERS = {
    "Cache-Control": "private, max-age=300",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
}
_GONE = "chart not found or expired"


async def _inputs(cid: str, request: Request) -> ChartInputs:
    inputs = await link_store(request).chart(cid)  # asked every time: the link's expiry is the store's
    if inputs is None:
        raise HTTPException(status_code=404, detail=_GONE)
    return inputs


@router.get(
    "/charts/{cid}.svg",
    response_class=Response,
    summary="Projected-level chart (SVG)",
    responses={200: {"content": {"image/svg+xml": {}}}, 404: {"description": _GONE}},
)
async def chart_svg(cid: str, request: Request) -> Response:
    inputs = await _inputs(cid, request)
    svg = await run_in_threadpool(_renders(request).svg, cid, inputs)
    return Response(svg, media_type="image/svg+xml; charset=utf-8", headers=_HEADERS)


@router.get(
    "/charts/{cid}.png",
    response_class=Response,
    summary="Projected-level chart (PNG)",
    responses={
        200: {"content": {"image/png": {}}},
        404: {"description": _GONE},
        503: {"description": "PNG rendering unavailable (no libcairo2)"},
    },
)
async def chart_png(cid: str, request: Request) -> Response:
    inputs = await _inputs(cid, request)
    try:
        png = await run_in_threadpool(_renders(request).png, cid, inputs)
    except RuntimeError as exc:
        raise HTTPException(status_code=503, detail="PNG rendering unavailable") from exc
    return Response(png, media_type="image/png", headers=_HEADERS)
