"""The EHR-like demo page: `GET /demo`, its static files, and the demo hook requests it fires.

The page (cds/static/demo.html, demo.css, demo.js; no build step) lists the packaged demo patients
(`GET /demo/patients`, served by the hooks package), fetches a ready-made CDS Hooks request for the
chosen one from `GET /demo/request/{name}?hook=order-select|order-sign` (full prefetch, built by
`cds.demo.hook_request`), and posts it to the real `/cds-services/{id}` endpoint, exactly as an EHR
would. Only mounted when `Settings.demo` is on; the data are synthetic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cds.settings import Settings

if TYPE_CHECKING:
    from cds.hooks.routes import Runtime

__all__ = ["CSP", "router"]

router = APIRouter(tags=["demo"])

# Everything the page loads comes from this origin; no inline script, no eval, no plugins. The chart
# opens as a top-level document from /charts/…, so it needs nothing here.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_STATIC = {
    "demo.css": "text/css; charset=utf-8",
    "demo.js": "text/javascript; charset=utf-8",
}


def _settings(request: Request) -> Settings:
    rt: Runtime = request.state.rt  # lifespan state built by cds.app
    return rt.settings


def _require_demo(request: Request) -> None:
    """The demo exists only with CDS_DEMO=1 (`make run` sets it)."""
    if not _settings(request).demo:
        raise HTTPException(status_code=404, detail="not found")


def _static(name: str) -> bytes:
    return resources.files("cds").joinpath("static", name).read_bytes()


@router.get("/demo", response_class=HTMLResponse, summary="EHR-like demo page (synthetic patients)")
def demo_page(request: Request) -> Response:
    _require_demo(request)
    return HTMLResponse(_static("demo.html"), headers=_HEADERS)


@router.get("/", include_in_schema=False)
def root(request: Request) -> Response:
    """With the demo on, the service's root points to it (a first run opens http://host:port/ first)."""
    _require_demo(request)
    return RedirectResponse("/demo", status_code=307)


@router.get("/demo/", include_in_schema=False)
def demo_slash() -> Response:
    return RedirectResponse("/demo", status_code=308)


@router.get("/demo/static/{name}", summary="Demo page asset", response_class=Response)
def demo_static(name: str, request: Request) -> Response:
    _require_demo(request)
    media = _STATIC.get(name)
    if media is None:
        raise HTTPException(status_code=404, detail="not found")
    return Response(_static(name), media_type=media, headers=_HEADERS)


@router.get("/demo/request/{name}", summary="A ready CDS Hooks request for a demo patient (full prefetch)")
def demo_request(
    name: str,
    request: Request,
    hook: Literal["order-select", "order-sign"] = Query("order-select"),
) -> JSONResponse:
    from cds import demo

    _require_demo(request)
    if name not in demo.scenarios():
        raise HTTPException(status_code=404, detail="unknown demo patient")
    p = demo.patient(name, datetime.now(UTC))
    body = demo.hook_request(p, hook, prefetch=True, settings=_settings(request))
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/demo/scenarios", summary="Demo patients with their titles, for the demo page's list")
def demo_scenarios(request: Request) -> JSONResponse:
    from cds import demo

    _require_demo(request)
    now = datetime.now(UTC)
    items = []
    for name in demo.scenarios():
        p = demo.patient(name, now)
        items.append({"name": p.name, "title": p.title, "description": p.description})
    return JSONResponse(items)
