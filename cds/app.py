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
import importlib
import inspect
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

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
from cds.views.chart_links import RenderCache
from cds.views.link_store import LinkStore, open_link_store

log = logging.getLogger("cds.app")

# Routers other work adds (module:attribute); included when the module exists.
# cds.views: the clinician view (chart, /demo page).
OPTIONAL_ROUTERS: tuple[str, ...] = ("cds.views.chart_links:router", "cds.views.demo:router")


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


# Responses whose __call__ is Response.__call__: start (status, raw_headers), then the whole body.
_PLAIN_RESPONSES = frozenset({Response, JSONResponse})

_BODY_KEY = "cds.edge_body"  # the body handed from serve_body to _call_endpoint (popped there)

HOOK_PATH = "/cds-services/{service_id}"
_HOOK_PREFIX = "/cds-services/"


class HookFastPath:
    """POST /cds-services/{id} straight to the route's endpoint, under the app's exception handlers.

    FastAPI's router, parameter solving and per-route wrappers cost about 50 µs per hook call for an
    endpoint that takes only (service_id, request) and returns a Response. The edge middleware, which
    has read the body, hands hook calls to `serve_body`; errors go to the app's own exception handlers,
    and unhandled ones to the ServerErrorMiddleware outside, as from the route. Everything else goes down
    the normal stack (`__call__`), and so does every hook call if the route ever gains dependencies or
    other parameters, or the app a handler that is not a coroutine function.
    """

    def __init__(self, app: Any, fastapi_app: FastAPI) -> None:
        self.app = app
        self._fastapi = fastapi_app
        self._built = False  # built on the first request, once every handler is registered
        self._endpoint: Any = None
        self._handlers: Any = None  # (by exception class, by status code), as ExceptionMiddleware holds them

    def _build(self) -> None:
        self._built = True
        # The hook route lives on cds.hooks.routes.router, included with no prefix or dependencies.
        route = next(
            (
                r
                for r in routes.router.routes
                if isinstance(r, APIRoute) and r.path == HOOK_PATH and "POST" in (r.methods or ())
            ),
            None,
        )
        handlers = self._fastapi.exception_handlers
        by_class = {k: v for k, v in handlers.items() if isinstance(k, type) and k is not Exception}
        by_status = {k: v for k, v in handlers.items() if isinstance(k, int) and k != 500}
        plain = (
            route is not None
            and not route.dependant.dependencies
            and not routes.router.dependencies
            and not self._fastapi.router.dependencies
            and list(inspect.signature(route.endpoint).parameters) == ["service_id", "request"]
            and inspect.iscoroutinefunction(route.endpoint)
            and StarletteHTTPException in by_class
            and all(inspect.iscoroutinefunction(h) for h in (*by_class.values(), *by_status.values()))
        )
        if not plain:
            log.warning("hook fast path off: %s is not a plain (service_id, request) endpoint", HOOK_PATH)
            return
        assert route is not None
        self._endpoint = route.endpoint
        self._handlers = (by_class, by_status)

    async def _call_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        request._body = scope.pop(_BODY_KEY)  # read by the edge layer: what Request.body() keeps once read
        response = await self._endpoint(scope["path_params"]["service_id"], request)
        await self._send(response, scope, receive, send)

    def _service_id(self, scope: dict[str, Any]) -> str | None:
        """The service id of a request this layer answers, else None."""
        if not self._built:
            self._build()
        path = scope.get("path", "")
        if (
            self._handlers is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and path.startswith(_HOOK_PREFIX)
            and "/" not in path[len(_HOOK_PREFIX) :]
            and len(path) > len(_HOOK_PREFIX)
            and not scope.get("root_path")
            and scope.get("fastapi.telemetry") is None  # traced requests keep FastAPI's route spans
        ):
            return str(path[len(_HOOK_PREFIX) :])
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    async def serve_body(self, scope: dict[str, Any], body: bytes, receive: Any, send: Any) -> bool:
        """Answer a hook call whose body the edge layer has read: False (nothing sent) if not one.

        What FastAPI's routing and ExceptionMiddleware do for the route, in fewer frames: the endpoint's
        Request holds the body; a handled exception's handler gets a Request of its own (as
        ExceptionMiddleware's); an unhandled one propagates (ServerErrorMiddleware answers
        it); responses go out as Response.__call__ sends them, with the edge layer's headers.
        """
        service_id = self._service_id(scope)
        handlers = self._handlers
        if service_id is None:
            return False
        scope["path_params"] = {"service_id": service_id}
        scope["endpoint"] = self._endpoint
        scope["starlette.exception_handlers"] = handlers
        scope[_BODY_KEY] = body
        try:
            await self._call_endpoint(scope, receive, send)
        except Exception as exc:
            handler = handlers[1].get(exc.status_code) if isinstance(exc, StarletteHTTPException) else None
            if handler is None:
                for cls in type(exc).__mro__:
                    handler = handlers[0].get(cls)
                    if handler is not None:
                        break
                else:
                    raise
            response = await handler(Request(scope, receive, send), exc)
            if response is not None:
                await self._send(response, scope, receive, send)
            exc.__traceback__ = None  # as Starlette does: reused exceptions accumulate tracebacks
        return True

    @staticmethod
    async def _send(response: Response, scope: Scope, receive: Any, send: Any) -> None:
        rewrite = getattr(send, "edge_headers", None)
        server_send = getattr(send, "server_send", None)
        if (
            type(response) not in _PLAIN_RESPONSES
            or response.background is not None
            or rewrite is None
            or server_send is None
        ):
            await response(scope, receive, send)
            return
        headers = rewrite(response.raw_headers)
        await server_send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await server_send({"type": "http.response.body", "body": response.body})


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


def _optional_routers(app: FastAPI) -> None:
    for spec in OPTIONAL_ROUTERS:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
                continue
            raise
        router = getattr(module, attr, None)
        if router is not None:
            app.include_router(router)


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
        reader: Any = None
        try:
            reader = fhir_io.FhirReader(http, settings, redis=redis)
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
            closers = (
                getattr(auth, "close", None),
                getattr(reader, "aclose", None),
                getattr(redis, "aclose", None),
            )
            for closer in closers:
                if closer is not None:
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
    app.add_middleware(HookFastPath, fastapi_app=app)  # added first: runs inside the edge layer
    install(app, settings)
    app.include_router(routes.router)
    app.include_router(routes.health_router)
    app.add_route("/metrics", metrics.metrics_endpoint, include_in_schema=False)
    if settings.demo:
        _demo_routes(app)
    _optional_routers(app)
    customise_openapi(app)
    return app
