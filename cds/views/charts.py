"""Short-lived chart links: an in-memory store of chart inputs under random opaque ids, and its routes.

The estimate card links to `{public_base_url}/charts/{id}.svg`. The id is `secrets.token_urlsafe`
(no patient id, no values in the URL); the inputs live `ttl_s` seconds, at most `max_entries` of them
(oldest evicted first). Rendering happens on GET, not in the hook, so a hook pays only for `put`.
The chart routes are outside JWT (clarifications.md): possession of the unguessable id is the access.

Wiring (cds/app.py):
    app.state.chart_store = ChartStore(ttl_s=900, max_entries=2048)
    app.include_router(charts_router)

The store is per process: with several workers a link is served only by the worker that made it
(use one worker, or sticky routing, where the chart matters).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from cds.engine.domain import PlexEstimate, PlexSession
from cds.views.chart import render_png, render_svg

__all__ = ["ChartInputs", "ChartStore", "chart_url", "get_chart_store", "router"]


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
    svg: str | None = field(default=None)


class ChartStore:
    """A bounded TTL map from random url-safe ids to chart inputs (thread-safe)."""

    def __init__(
        self, ttl_s: float = 900.0, max_entries: int = 2048, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError("ttl_s must be > 0 and max_entries >= 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

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

    def put(self, inputs: ChartInputs) -> str:
        """Store `inputs`; return a fresh random id (43 url-safe characters)."""
        cid = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._purge(now)
            while len(self._entries) >= self.max_entries:
                self._entries.popitem(last=False)
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
        """The rendered SVG for `cid` (rendered once, then kept with the entry), None when unknown/expired."""
        inputs = self.get(cid)
        if inputs is None:
            return None
        with self._lock:
            entry = self._entries.get(cid)
            if entry is not None and entry.svg is not None:
                return entry.svg
        svg = render_svg(inputs.estimate, inputs.sessions, inputs.now)
        with self._lock:
            entry = self._entries.get(cid)
            if entry is not None:
                entry.svg = svg
        return svg

    def png(self, cid: str) -> bytes | None:
        inputs = self.get(cid)
        if inputs is None:
            return None
        return render_png(inputs.estimate, inputs.sessions, inputs.now)


def chart_url(
    store: ChartStore,
    base_url: str,
    estimate: PlexEstimate,
    sessions: tuple[PlexSession, ...],
    now: datetime,
    fmt: str = "svg",
) -> str | None:
    """Absolute chart URL for the estimate card, or None when there is nothing to draw."""
    if not estimate.levels_used and estimate.adjusted_level_ug_per_ml is None and not estimate.projection:
        return None
    cid = store.put(ChartInputs(estimate, tuple(sessions), now))
    return f"{base_url.rstrip('/')}/charts/{cid}.{fmt}"


def get_chart_store(request: Request) -> ChartStore:
    store = getattr(request.app.state, "chart_store", None)
    if store is None:
        raise HTTPException(status_code=404, detail="charts are not enabled")
    return store  # type: ignore[no-any-return]


router = APIRouter(tags=["charts"])

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
