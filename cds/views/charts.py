"""Short-lived chart links: an in-memory store of chart inputs under random opaque ids, and its routes.

The estimate card links to `{public_base_url}/charts/{id}.svg`. The id is `secrets.token_urlsafe`
(no patient id, no values in the URL); the inputs live `ttl_s` seconds, at most `max_entries` of them.
A link that was handed out is never evicted before its `ttl_s`: when the store is full of live links,
`put` returns None and the card goes out without a chart link (issue 18: the oldest link used to be
evicted, so a link 404'd after 2,048 newer calls, well inside its 15 minutes).
Rendering happens on GET, not in the hook, so a hook pays only for `put`. The chart routes are outside
JWT (clarifications.md): possession of the unguessable id is the access. Each rendered image is kept
per link and format (`RenderCache`, bounded in bytes) and rendered one at a time per process, so many
clients opening one link render it once (16 clients on one PNG link took the hook p50 from 46 to 260 ms).

Wiring (cds/app.py):
    app.state.chart_store = open_chart_store(settings, ttl_s=900, max_entries=settings.chart_max_entries)
    app.include_router(charts_router)

The same stores keep each card's full page (`CardPage`, cds.views.pages, at `/cards/{id}`) and, for
cds.hooks.repeats, what order-select showed (digests under a digest key, `aremember`/`arecall`, with
the FHIR read cache's lifetime).

`ChartStore` is per process: with several workers a link is served only by the worker that made
it. With CDS_REDIS_URL set, `open_chart_store(settings)` returns `RedisChartStore`: the inputs are
kept as JSON under `<redis_key_prefix>chart:<id>` with the same TTL, so a link made by one worker or
replica opens on any other. If Redis cannot be written the card goes out without a chart link
(never a link that would 404); if it cannot be read the chart answers 404.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import threading
import time
import types
import typing
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cachetools import LRUCache
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from cds.engine.domain import PlexEstimate, PlexSession
from cds.views.chart import render_png, render_svg
from cds.views.pages import CardPage
from cds.views.pages import router as pages_router

__all__ = [
    "ChartInputs",
    "ChartStore",
    "RedisChartStore",
    "RenderCache",
    "chart_link",
    "chart_url",
    "get_chart_store",
    "open_chart_store",
    "router",
]

log = logging.getLogger("cds.views.charts")


@dataclass(frozen=True, slots=True)
class ChartInputs:
    """What `render_svg` needs; kept in memory only, never in a URL or a log."""

    estimate: PlexEstimate
    sessions: tuple[PlexSession, ...]
    now: datetime


@dataclass
class _Entry:
    inputs: ChartInputs
    expires: float


class RenderCache:
    """Rendered charts by (id, format), at most `max_bytes` of them (least recently used dropped first).

    One render at a time per process: a render takes 5 ms (SVG) to 350 ms (PNG) of CPU, and a link is
    open to anyone who has it, so concurrent requests wait for the one render instead of each doing it.
    """

    def __init__(self, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._images: LRUCache[tuple[str, str], str | bytes] = LRUCache(maxsize=max_bytes, getsizeof=len)
        self._lock = threading.Lock()  # the cache
        self._render_lock = threading.Lock()  # one render at a time
        self.renders = 0  # how many renders this process did (tests, diagnostics)

    def svg(self, cid: str, inputs: ChartInputs) -> str:
        image = self._image(cid, "svg", inputs)
        return image if isinstance(image, str) else image.decode()

    def png(self, cid: str, inputs: ChartInputs) -> bytes:
        image = self._image(cid, "png", inputs)
        return image if isinstance(image, bytes) else image.encode()

    def _image(self, cid: str, fmt: str, inputs: ChartInputs) -> str | bytes:
        key = (cid, fmt)
        with self._lock:
            found = self._images.get(key)
        if found is not None:
            return found
        with self._render_lock:
            with self._lock:
                found = self._images.get(key)
            if found is not None:
                return found  # rendered while this request waited
            render = render_svg if fmt == "svg" else render_png
            image: str | bytes = render(inputs.estimate, inputs.sessions, inputs.now)
            self.renders += 1
        with self._lock:
            if len(image) <= self._images.maxsize:
                self._images[key] = image
        return image


class ChartStore:
    """A bounded TTL map from random url-safe ids to chart inputs (thread-safe); never evicts a live id."""

    def __init__(
        self, ttl_s: float = 900.0, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError("ttl_s must be > 0 and max_entries >= 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._pages: OrderedDict[str, tuple[float, CardPage]] = OrderedDict()
        self._recalls: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.rendered = RenderCache()
        self._full_logged = float("-inf")

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._entries)

    def _purge(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                break
            del self._entries[key]

    def put(self, inputs: ChartInputs) -> str | None:
        """Store `inputs`; a fresh random id (43 url-safe characters), or None when the store is full of
        live links (then no link: one that would 404 before its time is worse than none)."""
        cid = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._purge(now)
            if len(self._entries) >= self.max_entries:
                if now - self._full_logged >= 60:
                    self._full_logged = now
                    log.warning(
                        "chart store full (%d live links, CDS_CHART_MAX_ENTRIES); cards go without a chart "
                        "link until older links expire",
                        len(self._entries),
                    )
                return None
            self._entries[cid] = _Entry(inputs, now + self.ttl_s)
        return cid

    def get(self, cid: str) -> ChartInputs | None:
        with self._lock:
            entry = self._entries.get(cid)
            if entry is None:
                return None
            if entry.expires <= self._clock():
                del self._entries[cid]
                return None
            return entry.inputs

    def svg(self, cid: str) -> str | None:
        """The rendered SVG for `cid` (rendered once, then cached), None when unknown/expired."""
        inputs = self.get(cid)
        return None if inputs is None else self.rendered.svg(cid, inputs)

    def png(self, cid: str) -> bytes | None:
        inputs = self.get(cid)
        return None if inputs is None else self.rendered.png(cid, inputs)

    async def aput(self, inputs: ChartInputs) -> str | None:
        return self.put(inputs)

    # a card's full page (cds.views.pages), under its own random id, with the charts' TTL and bound;
    # like a chart link, never one that would 404 before its time: when full of live pages, no page
    async def aput_page(self, page: CardPage) -> str | None:
        cid = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            for k in [k for k, (expires, _) in self._pages.items() if expires <= now]:
                del self._pages[k]
            if len(self._pages) >= PAGES_PER_CHART * self.max_entries:
                return None
            self._pages[cid] = (now + self.ttl_s, page)
        return cid

    def page(self, cid: str) -> CardPage | None:
        with self._lock:
            found = _fresh(self._pages, cid, self._clock())
        return None if found is None else found

    # what order-select showed (cds.hooks.repeats): a short value under a digest key, for ttl_s seconds
    async def aremember(self, key: str, value: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        now = self._clock()
        with self._lock:
            _bounded_put(self._recalls, key, (now + ttl_s, value), self.max_entries, now)

    async def arecall(self, key: str) -> str | None:
        with self._lock:
            return _fresh(self._recalls, key, self._clock())

    async def aclose(self) -> None:
        return None


_V = typing.TypeVar("_V")
PAGES_PER_CHART = 3  # a hook call keeps one chart and a full page per card (three cards)


def _bounded_put(
    entries: OrderedDict[str, tuple[float, _V]],
    key: str,
    value: tuple[float, _V],
    max_entries: int,
    now: float,
) -> None:
    """Put `value` (expiry, payload) under `key`: expired entries purged first, then the oldest."""
    for k in [k for k, (expires, _) in entries.items() if expires <= now]:
        del entries[k]
    entries.pop(key, None)
    while len(entries) >= max_entries:
        entries.popitem(last=False)
    entries[key] = value


def _fresh(entries: OrderedDict[str, tuple[float, _V]], key: str, now: float) -> _V | None:
    found = entries.get(key)
    if found is None:
        return None
    if found[0] <= now:
        del entries[key]
        return None
    return found[1]


# ---------------------------------------------------------------- shared store (Redis)


def _encode(value: Any) -> Any:
    """Chart inputs -> JSON-able values (dataclasses by field, datetimes as ISO 8601, tuples as lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


def _decode(tp: Any, value: Any) -> Any:
    """The inverse of `_encode`, driven by the dataclasses' type hints."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(inner, value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(args, value, strict=True))
    if origin is typing.Literal:
        return value
    if tp is datetime:
        return datetime.fromisoformat(value)
    if tp is float:
        return float(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _decode(hints[f.name], value[f.name]) for f in dataclasses.fields(tp)})
    return value


def dumps_inputs(inputs: ChartInputs) -> str:
    return json.dumps(_encode(inputs), separators=(",", ":"))


def loads_inputs(text: str | bytes) -> ChartInputs:
    inputs: ChartInputs = _decode(ChartInputs, json.loads(text))
    return inputs


class RedisChartStore:
    """Chart inputs in Redis (`SET <prefix>chart:<id> <json> EX ttl_s`), shared by workers and replicas.

    `aput` runs in the hook (async client); `get`/`svg`/`png` run in the chart routes' thread pool
    (sync client). No size bound here: Redis's own memory policy and the TTL bound it.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "cds:",
        ttl_s: float = 900.0,
        timeout_s: float = 1.0,
        retry_after_s: float = 5.0,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        import redis
        import redis.asyncio as aioredis

        self.ttl_s = ttl_s
        self.prefix = prefix + "chart:"
        self._page_prefix = prefix + "page:"
        self._recall_prefix = prefix + "shown:"
        opts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        self._sync = redis.Redis.from_url(url, **opts)
        self._async = aioredis.Redis.from_url(url, **opts)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)
        self._retry_after_s = retry_after_s
        self._down_until = 0.0
        self.rendered = RenderCache()

    async def _aput(self, prefix: str, value: str | bytes, what: str) -> str | None:
        """Store `value` under a fresh random id; None when Redis cannot take it (no link then).

        After a failure Redis is not asked again for `retry_after_s`: an outage costs one timeout.
        """
        if time.monotonic() < self._down_until:
            return None
        cid = secrets.token_urlsafe(32)
        try:
            await self._async.set(prefix + cid, value, px=int(self.ttl_s * 1000))
        except self._errors as exc:
            self._down_until = time.monotonic() + self._retry_after_s
            log.warning("chart store: redis unavailable (%s); card without its %s", type(exc).__name__, what)
            return None
        return cid

    def _get(self, prefix: str, cid: str) -> bytes | str | None:
        try:
            raw: bytes | str | None = self._sync.get(prefix + cid)
        except self._errors as exc:
            log.warning("chart store: redis unavailable (%s)", type(exc).__name__)
            return None
        return raw

    async def aput(self, inputs: ChartInputs) -> str | None:
        """Store `inputs`; a fresh random id, or None when Redis cannot take it."""
        return await self._aput(self.prefix, dumps_inputs(inputs), "chart link")

    def get(self, cid: str) -> ChartInputs | None:
        raw = self._get(self.prefix, cid)
        if raw is None:
            return None
        try:
            return loads_inputs(raw)
        except (ValueError, TypeError, KeyError):
            log.warning("chart store: unreadable entry ignored")
            return None

    def svg(self, cid: str) -> str | None:
        inputs = self.get(cid)  # asked every time: the link's expiry is Redis's
        return None if inputs is None else self.rendered.svg(cid, inputs)

    async def aput_page(self, page: CardPage) -> str | None:
        """Store a card's full page under `<prefix>page:<id>`; None when Redis cannot take it (no link)."""
        return await self._aput(self._page_prefix, page.dumps(), "page link")

    def page(self, cid: str) -> CardPage | None:
        raw = self._get(self._page_prefix, cid)
        if raw is None:
            return None
        try:
            return CardPage.loads(raw)
        except (ValueError, TypeError, KeyError):
            log.warning("chart store: unreadable page ignored")
            return None

    async def aremember(self, key: str, value: str, ttl_s: float) -> None:
        if ttl_s <= 0 or time.monotonic() < self._down_until:
            return
        try:
            await self._async.set(self._recall_prefix + key, value, px=int(ttl_s * 1000))
        except self._errors as exc:
            self._down_until = time.monotonic() + self._retry_after_s
            log.warning("chart store: redis unavailable (%s); nothing remembered", type(exc).__name__)

    async def arecall(self, key: str) -> str | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            raw = await self._async.get(self._recall_prefix + key)
        except self._errors as exc:
            self._down_until = time.monotonic() + self._retry_after_s
            log.warning("chart store: redis unavailable (%s); nothing recalled", type(exc).__name__)
            return None
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    def png(self, cid: str) -> bytes | None:
        inputs = self.get(cid)
        return None if inputs is None else self.rendered.png(cid, inputs)

    async def aclose(self) -> None:
        await self._async.aclose()
        self._sync.close()


def open_chart_store(settings: Any, ttl_s: float = 900.0, max_entries: int = 10_000) -> Any:
    """Redis when `settings.redis_url` is set, else the in-process store."""
    if getattr(settings, "redis_url", None):
        return RedisChartStore(
            settings.redis_url, prefix=getattr(settings, "redis_key_prefix", "cds:"), ttl_s=ttl_s
        )
    return ChartStore(ttl_s=ttl_s, max_entries=max_entries)


def _drawable(estimate: PlexEstimate) -> bool:
    return bool(estimate.levels_used or estimate.adjusted_level_ug_per_ml is not None or estimate.projection)


def _chart_inputs(
    estimate: PlexEstimate, sessions: tuple[PlexSession, ...], now: datetime
) -> ChartInputs | None:
    """What a store keeps for one chart, or None when there is nothing to draw."""
    return ChartInputs(estimate, tuple(sessions), now) if _drawable(estimate) else None


def _chart_href(base_url: str, cid: str, fmt: str) -> str:
    return f"{base_url.rstrip('/')}/charts/{cid}.{fmt}"


async def chart_link(
    store: Any,
    base_url: str,
    estimate: PlexEstimate,
    sessions: tuple[PlexSession, ...],
    now: datetime,
    fmt: str = "svg",
) -> str | None:
    """`chart_url` for any store (awaits its `aput`); None when there is nothing to draw or keep."""
    inputs = _chart_inputs(estimate, sessions, now)
    if inputs is None:
        return None
    cid = await store.aput(inputs)
    return None if cid is None else _chart_href(base_url, cid, fmt)


def chart_url(
    store: ChartStore,
    base_url: str,
    estimate: PlexEstimate,
    sessions: tuple[PlexSession, ...],
    now: datetime,
    fmt: str = "svg",
) -> str | None:
    """Absolute chart URL for the estimate card, or None when there is nothing to draw."""
    inputs = _chart_inputs(estimate, sessions, now)
    cid = None if inputs is None else store.put(inputs)
    return None if cid is None else _chart_href(base_url, cid, fmt)


def get_chart_store(request: Request) -> ChartStore:
    store = getattr(request.app.state, "chart_store", None)
    if store is None:
        raise HTTPException(status_code=404, detail="charts are not enabled")
    return store  # type: ignore[no-any-return]


router = APIRouter(tags=["charts"])
router.include_router(pages_router)  # the cards' full pages live in the same store

_HEADERS = {
    "Cache-Control": "private, max-age=300",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
}
_GONE = "chart not found or expired"


@router.get(
    "/charts/{cid}.svg",
    response_class=Response,
    summary="Projected-level chart (SVG)",
    responses={200: {"content": {"image/svg+xml": {}}}, 404: {"description": _GONE}},
)
def chart_svg(cid: str, request: Request) -> Response:
    svg = get_chart_store(request).svg(cid)
    if svg is None:
        raise HTTPException(status_code=404, detail=_GONE)
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
def chart_png(cid: str, request: Request) -> Response:
    try:
        png = get_chart_store(request).png(cid)
    except RuntimeError as exc:
        raise HTTPException(status_code=503, detail="PNG rendering unavailable") from exc
    if png is None:
        raise HTTPException(status_code=404, detail=_GONE)
    return Response(png, media_type="image/png", headers=_HEADERS)
