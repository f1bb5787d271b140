"""The application factory: `create_app(settings)`. Nothing is built at import time.

The lifespan builds one httpx.AsyncClient, one Redis client when CDS_REDIS_URL is set (cds.shared_redis:
the jti replay store, the FHIR read cache and the link store share it), the Authenticator, the
FhirReader, the store and the link store, and hands them to requests as lifespan state
(`request.state.rt`, reached through the named dependencies in cds.hooks.routes; `links` and
`chart_renders` for the chart and page routes). One set of exception handlers turns every error into
status + OperationOutcome.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

import cds
from cds import fhir_io, metrics
from cds.auth import Authenticator, validate_startup
from cds.errors import CdsError, Unauthorized, to_operation_outcome
from cds.hooks import routes
from cds.hooks.models import DiscoveryResponse
from cds.hooks.openapi import customise_openapi
from cds.hooks.services import definitions
from cds.log import log_refused
from cds.middleware import install
from cds.outbound import http_client
from cds.replay import open_replay_store
from cds.settings import Settings
from cds.shared_redis import connect_redis
from cds.store import open_store
from cds.views import chart_links as chart_views
from cds.views import demo as demo_views
from cds.views.chart_links import RenderCache
from cds.views.link_store import LinkStore, open_link_store

log = logging.getLogger("cds.app")


def _outcome(status: int, code: str, text: str, diagnostics: str) -> JSONResponse:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "details": {"text": text}, "diagnostics": diagnostics}],
    }
    return JSONResponse(body, status_code=status)


_HTTP_ISSUE = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported"}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CdsError)
    async def _cds_error(request: Request, exc: CdsError) -> Response:
        if isinstance(exc, Unauthorized):
            log.info("401 on %s: %s", request.url.path, exc.message)  # reason to the log, never the token
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if exc.status_code >= 500:
            log.error("%s on %s hookInstance=%s", exc.code, request.url.path, _hook_instance(request))
        elif exc.status_code != 412:  # a 412 has its hook line (cds/hooks/routes.py)
            log_refused(request.method, request.url.path, exc.status_code, exc.code, _hook_instance(request))
        return JSONResponse(to_operation_outcome(exc), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        return _outcome(400, "invalid", "; ".join(parts) or "invalid request", "bad-request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 401:
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if exc.status_code == 404 and (location := _slash_redirect(app, request)) is not None:
            return Response(status_code=307, headers={"Location": location})
        text = exc.detail if isinstance(exc.detail, str) else "request failed"
        resp = _outcome(
            exc.status_code, _HTTP_ISSUE.get(exc.status_code, "processing"), text, f"http-{exc.status_code}"
        )
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error(
            "unexpected %s on %s hookInstance=%s",
            type(exc).__name__,
            request.url.path,
            _hook_instance(request),
            exc_info=exc,
        )
        response = _outcome(500, "exception", "internal error", "internal")
        # Starlette re-raises after this response and uvicorn then closes the connection: say so, or a
        # keep-alive client sends its next request into a closed socket (a read error, issue 18).
        response.headers["Connection"] = "close"
        return response


def _slash_redirect(app: FastAPI, request: Request) -> str | None:
    """`/cds-services/` -> `/cds-services`: a path-only Location, never built from the Host header.

    Starlette's own trailing-slash redirect (off here) writes an absolute URL from the Host header, so
    `Host: evil.example` sent the EHR elsewhere. Only a path that one of our routes serves, without
    its trailing slash, is redirected; `//host/` is never (a Location of `//host` leaves the site).
    """
    path = request.url.path
    if len(path) < 2 or not path.endswith("/") or path.startswith("//"):
        return None
    target = path.rstrip("/")
    scope = {**request.scope, "path": target}
    if not target or not any(route.matches(scope)[0] != Match.NONE for route in app.router.routes):
        return None
    query = request.url.query
    return target + (f"?{query}" if query else "")


def _hook_instance(request: Request) -> str:
    return str(getattr(request.state, "hook_instance", "-"))


_GC_GEN0_THRESHOLD = 10_000
_gc_tuned = False


def _tune_gc() -> None:
    """Keep the cyclic GC off the request path: the p99 tail at c=1 and about 60 µs per PLEX hook call.

    * gc.freeze() after startup: a full collection otherwise walks every module, schema and the app
      (about 60 ms here) every few hundred hook calls.
    * gen-0 threshold 10,000 instead of 700: a hook call holds a few thousand container objects at
      once, so at 700 a young collection ran in nearly every call; almost all of them are freed by
      reference counting when the call ends, so a higher threshold collects far less.
    Once per process (a worker serves one app; tests build many), after a collection so that no
    garbage is frozen.
    """
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(_GC_GEN0_THRESHOLD, gen0), gen1, gen2)


def _demo_routes(app: FastAPI) -> None:
    @app.get("/demo/patients", tags=["demo"], summary="Demo scenarios (CDS_DEMO=1 only)")
    async def demo_patients() -> Any:
        from fastapi.encoders import jsonable_encoder

        from cds import demo

        return jsonable_encoder(demo.scenarios())


def create_app(
    settings: Settings | None = None,
    *,
    links: LinkStore | None = None,
    chart_renders: RenderCache | None = None,
) -> FastAPI:
    """The app. `links` and `chart_renders` replace the link store the lifespan would open and the
    process's chart image cache (tests hand in their own to look at them)."""
    settings = settings or Settings()
    renders = chart_renders or RenderCache()
    validate_startup(settings)  # refuses JWT auth with no issuer; warns when auth is off
    defs = definitions(settings)
    discovery_body = json.dumps(DiscoveryResponse(services=defs).to_json(), separators=(",", ":")).encode()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        http = http_client(settings)
        store = open_store(settings)
        redis = connect_redis(settings)  # the one Redis client of this worker, or None
        link_store = links or open_link_store(settings, redis)
        auth = Authenticator(settings, http, replay=open_replay_store(settings, redis))
        reader = fhir_io.FhirReader(http, settings, redis=redis)
        try:
            await store.start()
            rt = routes.Runtime(
                links=link_store,
                settings=settings,
                http=http,
                auth=auth,
                reader=reader,
                store=store,
                definitions={d.id: d for d in defs},
                discovery_body=discovery_body,
            )
            _tune_gc()
            yield {"rt": rt, "links": link_store, "chart_renders": renders}
        finally:
            closers = [auth.close, reader.aclose] + ([redis.aclose] if redis is not None else [])
            for closer in closers:
                try:
                    await closer()
                except Exception:
                    log.exception("error while closing")
            await store.close()
            await http.aclose()

    app = FastAPI(
        title="PML-PLEX CDS Hooks service",
        version=cds.__version__,
        description=(
            "CDS Hooks 2.0 service: plasma exchange for natalizumab-associated PML (remaining sessions, "
            "IRIS risk, rebound-safe DMT)."
        ),
        lifespan=lifespan,
        docs_url="/docs" if settings.api_docs else None,  # CDS_API_DOCS: off unless asked for
        openapi_url="/openapi.json" if settings.api_docs else None,
        redoc_url=None,
        redirect_slashes=False,  # its redirect reflects the Host header; _slash_redirect is path-only
    )
    _install_error_handlers(app)
    install(app, settings)
    app.include_router(routes.router)
    app.include_router(routes.health_router)
    app.add_route("/metrics", metrics.metrics_endpoint, include_in_schema=False)
    if settings.demo:
        _demo_routes(app)
    app.include_router(chart_views.router)  # the chart and the cards' full pages
    app.include_router(demo_views.router)  # the /demo page
    customise_openapi(app)
    return app
