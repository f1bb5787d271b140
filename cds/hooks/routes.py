"""HTTP surface of the CDS Hooks protocol: discovery, hook calls, feedback, health.

Every CDS Hooks route authenticates the caller first (cds.auth; a bare 401 on failure), then reads
and validates the body itself (so that an unauthenticated caller learns nothing from a 400).
Errors are raised as cds.errors.CdsError and turned into status + OperationOutcome by cds.app.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from cds import metrics
from cds.auth import Authenticator, Claims
from cds.engine import dmt as dmt_engine
from cds.engine import iris as iris_engine
from cds.engine import remaining
from cds.errors import BadHookRequest, CdsError, DataUnavailable, FhirServerNotAllowed, UnknownService
from cds.fhir import orders as fhir_orders
from cds.fhir_io import FhirReader, LoadResult
from cds.hooks import cards as card_render
from cds.hooks import repeats
from cds.hooks.models import (
    Card,
    CdsResponse,
    DiscoveryResponse,
    FeedbackRequest,
    HookRequest,
    ServiceDefinition,
)
from cds.hooks.services import BY_ID, CdsService
from cds.log import hook_instance_var, service_id_var
from cds.outbound import check_fhir_server
from cds.settings import Settings
from cds.store import Store
from cds.views.chart_links import keep_chart_link
from cds.views.link_store import LinkStore
from cds.views.pages import CardPage, page_href

log = logging.getLogger("cds.hooks")

EMPTY_CARDS = b'{"cards":[]}'
ORDER_HOOKS = frozenset({"order-select", "order-sign"})
JSON = "application/json"


@dataclass(frozen=True)
class Runtime:
    """Everything a request needs, built once in the app's lifespan."""

    settings: Settings
    http: httpx.AsyncClient
    auth: Authenticator
    reader: FhirReader
    store: Store
    definitions: dict[str, ServiceDefinition]
    discovery_body: bytes
    links: LinkStore  # chart inputs, cards' full pages, order-select's memory (cds.views.link_store)


# ---------------------------------------------------------------- dependencies (async: no thread pool)


async def get_runtime(request: Request) -> Runtime:
    return request.state.rt  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def authenticate(request: Request) -> Claims | None:
    rt: Runtime = request.state.rt
    if rt.auth.settings.auth == "off":  # what check() answers; skips building request.url (~7 µs)
        return None
    endpoint = rt.settings.public_base_url.rstrip("/") + request.url.path
    return await rt.auth.check(request, endpoint)


ClaimsDep = Annotated[Claims | None, Depends(authenticate)]


# ---------------------------------------------------------------- helpers


def _describe(exc: ValidationError) -> str:
    """Where and what, never the offending value (it may be PHI)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request body"


async def _body(request: Request) -> bytes:
    # cds.middleware has already read, size-limited (413) and depth-checked the body; this is its replay.
    return await request.body()


def _service(service_id: str) -> CdsService:
    service = BY_ID.get(service_id)
    if service is None:
        raise UnknownService(service_id)
    return service


def _is_outcome(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def prefetch_complete(prefetch: dict[str, Any] | None, templates: dict[str, str] | None) -> bool:
    """Every template key answered (null counts: "no data"); an OperationOutcome or absence does not."""
    if not templates:
        return True
    if not prefetch:
        return False
    return all(k in prefetch and not _is_outcome(prefetch[k]) for k in templates)


# ---------------------------------------------------------------- routes

router = APIRouter()

_REQ_HOOK = {"content": {JSON: {"schema": {"$ref": "#/components/schemas/HookRequest"}}}, "required": True}
_REQ_FEEDBACK = {
    "content": {JSON: {"schema": {"$ref": "#/components/schemas/FeedbackRequest"}}},
    "required": True,
}
_OO = {"content": {JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid request (OperationOutcome)", **_OO},
    401: {"description": "Authentication failed (no body detail)"},
    404: {"description": "Unknown service (OperationOutcome)", **_OO},
    413: {"description": "Body too large (OperationOutcome)", **_OO},
    415: {"description": "Not application/json (OperationOutcome)", **_OO},
    500: {"description": "Internal error (OperationOutcome, no traceback)", **_OO},
}


@router.get(
    "/cds-services",
    response_model=DiscoveryResponse,
    responses={401: _ERRORS[401]},
    summary="CDS Hooks discovery",
    tags=["cds-hooks"],
)
async def discovery(rt: RuntimeDep, claims: ClaimsDep) -> Response:
    return Response(rt.discovery_body, media_type=JSON)


async def call_service(service_id: str, request: Request) -> Response:
    # POST /cds-services/{service_id}, through serve_hook_call (its docstring would become the
    # OpenAPI description)
    started = time.perf_counter()
    service = _service(service_id)
    try:
        rt: Runtime = request.state.rt
        claims = await authenticate(request)
        return await _run(service, request, rt, claims, started)
    except CdsError as exc:
        metrics.observe_request(service.id, exc.code, time.perf_counter() - started)
        raise


async def serve_hook_call(request: Request) -> Response:
    return await call_service(request.path_params["service_id"], request)


# The hook call is a plain Starlette route on this router, not a FastAPI APIRoute: FastAPI's parameter
# solving and route wrappers cost about 130 µs of the 350 µs CPU of a non-PLEX call on the real server
# (issue 16, bench/), and call_service needs none of it (it reads the body itself, after the JWT
# check). Everything else is the app's ordinary routing and exception handling. Its OpenAPI operation
# is HOOK_CALL_DOC, an APIRoute that cds.hooks.openapi hands to get_openapi and that serves nothing.
HOOK_PATH = "/cds-services/{service_id}"
router.add_route(HOOK_PATH, serve_hook_call, methods=["POST"], include_in_schema=False)
HOOK_CALL_DOC = APIRoute(
    HOOK_PATH,
    call_service,
    methods=["POST"],
    response_model=CdsResponse,
    responses={**_ERRORS, 412: {"description": "Required data unavailable (OperationOutcome)", **_OO}},
    openapi_extra={"requestBody": _REQ_HOOK},
    summary="Call a CDS service (order-select / order-sign)",
    tags=["cds-hooks"],
)


async def _run(
    service: CdsService, request: Request, rt: Runtime, claims: Claims | None, started: float
) -> Response:
    try:
        hook = HookRequest.from_body(await _body(request))  # = model_validate_json(raw), faster
    except ValidationError as exc:
        raise BadHookRequest(_describe(exc)) from None
    request.state.hook_instance = hook.hookInstance
    # = `with log_context(hook_instance=…, service_id=…)`, without the generator context manager
    bound = hook_instance_var.set(hook.hookInstance), service_id_var.set(service.id)
    try:
        return await _hook(service, hook, rt, claims, started)
    finally:
        hook_instance_var.reset(bound[0])
        service_id_var.reset(bound[1])


async def _hook(
    service: CdsService,
    hook: HookRequest,
    rt: Runtime,
    claims: Claims | None,
    started: float,
) -> Response:
    _check_hook(service, hook)
    selections = hook.context.selections if service.hook == "order-select" else None
    orders = fhir_orders.plex_orders(hook.context.draftOrders, selections, rt.settings)
    audit = _audit_row(service, hook, claims)
    if not orders:
        await _finish(rt, audit, started, outcome="no-plex-order", kinds=[])
        return Response(EMPTY_CARDS, media_type=JSON)
    load = await _load(service, hook, rt, claims, audit, started)
    if not load.exposure:
        await _finish(rt, audit, started, outcome="no-natalizumab-exposure", kinds=[])
        return Response(EMPTY_CARDS, media_type=JSON)
    cards = await _cards(service, hook, rt, load, orders[0])
    repeated = await _repeats(service, hook, rt, claims, orders[0], cards)
    if repeated:
        audit["repeatsLeftOut"] = len(repeated)
        cards = [c for c in cards if c not in repeated]
    kinds = [c.extension["pml-plex"]["kind"] for c in cards if c.extension]
    await _finish(rt, audit, started, outcome="cards", kinds=kinds)
    body = CdsResponse(cards=cards).to_json()
    metrics.count_cards(service.id, body["cards"])
    # to_json leaves str keys and plain values only (no NaN): orjson writes the same bytes as
    # pydantic_core.to_json (tests/hooks/test_json_bytes.py), in about a fifth of the time
    return Response(orjson.dumps(body), media_type=JSON)


def _check_hook(service: CdsService, hook: HookRequest) -> None:
    """A call whose `hook` is not the service's is refused, except between the two order hooks."""
    if hook.hook == service.hook:
        return
    if hook.hook not in ORDER_HOOKS or service.hook not in ORDER_HOOKS:
        raise BadHookRequest(
            f"service {service.id} answers {service.hook}, not {hook.hook}", code="hook-mismatch"
        )
    # The CDS Hooks Sandbox stamps its current screen's hook on every call (issue 17): routing is on
    # the service id, so the call is answered as this service's own hook, and said in the log.
    log.warning(
        "hook %s %s sent hook=%s; answered as %s", service.id, hook.hookInstance, hook.hook, service.hook
    )


def _audit_row(service: CdsService, hook: HookRequest, claims: Claims | None) -> dict[str, Any]:
    """The audit row's first fields; _load and _finish add what the call found and answered."""
    return {
        "time": datetime.now(UTC).isoformat(),
        "service": service.id,
        "hook": service.hook,
        "sentHook": hook.hook if hook.hook != service.hook else None,
        "hookInstance": hook.hookInstance,
        "issuer": claims.iss if claims else None,
        "tenant": claims.tenant if claims else None,
        "jti": claims.jti if claims else None,
    }


async def _load(
    service: CdsService,
    hook: HookRequest,
    rt: Runtime,
    claims: Claims | None,
    audit: dict[str, Any],
    started: float,
) -> LoadResult:
    """The patient's facts from the prefetch and, for what it lacks, the EHR's FHIR server.

    A 412 (DataUnavailable) is a hook call too: it gets the integration engineer's log line and an
    audit row (the FHIR reads before it touched the patient's record) before it propagates."""
    settings = rt.settings
    token = hook.fhirAuthorization.access_token.get_secret_value() if hook.fhirAuthorization else None
    expires_in = hook.fhirAuthorization.expires_in if hook.fhirAuthorization else None
    fhir_server = hook.fhirServer if (hook.fhirServer and (token or settings.allow_open_fhir)) else None
    try:
        if fhir_server:
            try:
                check_fhir_server(fhir_server, settings, claims)
            except FhirServerNotAllowed:
                if not prefetch_complete(hook.prefetch, rt.definitions[service.id].prefetch):
                    raise
                fhir_server, token = None, None  # everything is prefetched: no call leaves the service
        load = await rt.reader.load(hook.context.patientId, hook.prefetch, fhir_server, token, expires_in)
    except DataUnavailable as exc:
        if exc.sources:
            audit["sources"] = dict(exc.sources)
        await _finish(rt, audit, started, outcome=exc.code, kinds=[], status=exc.status_code)
        raise
    audit["sources"] = dict(load.sources)
    hits = sum(1 for v in load.sources.values() if v == "prefetch")
    metrics.count_prefetch(service.id, hits, len(load.sources) - hits)
    audit["skipped"] = load.skipped
    return load


async def _cards(
    service: CdsService, hook: HookRequest, rt: Runtime, load: LoadResult, order: fhir_orders.PlexOrder
) -> list[Card]:
    """The engine's three answers as cards, each card's full page kept in the chart store."""
    settings = rt.settings
    now = datetime.now(UTC)
    estimate = remaining.estimate_remaining(load.facts, order.plan, settings.plex_target_ug_per_ml, now)
    iris = iris_engine.assess_iris(load.facts, order.plan, now)
    dmt = dmt_engine.advise_dmt(load.facts, now)
    chart = await keep_chart_link(rt.links, settings.public_base_url, estimate, load.facts.sessions, now)
    made = card_render.drafts(
        card_render.CardInput(
            estimate=estimate,
            iris=iris,
            dmt=dmt,
            load=load,
            order=order,
            now=now,
            patient_id=hook.context.patientId,
            level_coding=card_render.level_coding(settings.natalizumab_level_codes),
            chart_url=chart,
            records=prefetched_records(hook.prefetch),
        )
    )
    pages = await _keep_pages(rt, made, now)
    return card_render.finish(made, pages)


async def _repeats(
    service: CdsService,
    hook: HookRequest,
    rt: Runtime,
    claims: Claims | None,
    order: fhir_orders.PlexOrder,
    cards: list[Card],
) -> list[Card]:
    """order-select remembers its cards; order-sign gets back the info cards it may leave out."""
    key = repeats.memory_key(
        issuer=claims.iss if claims else None,
        tenant=claims.tenant if claims else None,
        patient_id=hook.context.patientId,
        order=order.reference,
        user_id=hook.context.userId,
    )
    if service.hook == "order-select":
        expires_in = hook.fhirAuthorization.expires_in if hook.fhirAuthorization else None
        await repeats.remember(rt.links, key, cards, repeats.lifetime_s(rt.settings.cache_ttl_s, expires_in))
        return []
    return await repeats.unchanged_info(rt.links, key, cards)


def prefetched_records(prefetch: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """MedicationRequests of the prefetch by reference ("MedicationRequest/1"): the whole resources a
    suggestion that stops one must carry (an `update` sends the full resource). Read-only."""
    out: dict[str, dict[str, Any]] = {}
    bundle = (prefetch or {}).get("medicationRequests")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return out
    for entry in bundle.get("entry") or ():
        res = entry.get("resource") if isinstance(entry, dict) else None
        if (
            isinstance(res, dict)
            and res.get("resourceType") == "MedicationRequest"
            and isinstance(res.get("id"), str)
        ):
            out[f"MedicationRequest/{res['id']}"] = res
    return out


async def _keep_pages(rt: Runtime, made: list[card_render.CardDraft], now: datetime) -> dict[str, str]:
    """Each card's full page in the link store; its absolute URL by kind (none when it was not kept)."""
    urls: dict[str, str] = {}
    for draft in made:
        page = CardPage(title=draft.title, markdown=card_render.page_markdown(draft), made_at=now.isoformat())
        cid = await rt.links.put_page(page)
        if cid is not None:
            urls[draft.kind] = page_href(rt.settings.public_base_url, cid)
    return urls


async def _finish(
    rt: Runtime,
    audit: dict[str, Any],
    started: float,
    *,
    outcome: str,
    kinds: list[str],
    status: int = 200,
) -> None:
    """The hook's log line and audit row; for an error answer (`status` >= 400) call_service counts
    the request in the metrics, with the error's code."""
    seconds = time.perf_counter() - started
    ms = round(seconds * 1000, 1)
    if status < 400:
        metrics.observe_request(audit["service"], "cards" if kinds else "no-cards", seconds)
    audit.update(outcome=outcome, status=status, cards=kinds, ms=ms)
    event = {k: v for k, v in audit.items() if v is not None}
    log.info(
        "hook %s %s outcome=%s status=%d cards=%d ms=%.1f sources=%s",
        event["service"],
        event["hookInstance"],
        outcome,
        status,
        len(kinds),
        ms,
        event.get("sources", {}),
    )
    try:
        await rt.store.add_audit(event)
    except Exception:  # the audit trail must never fail a hook call
        log.exception("audit write failed for %s", event["hookInstance"])


@router.post(
    "/cds-services/{service_id}/feedback",
    responses={**_ERRORS, 200: {"description": "Feedback stored (idempotent on repeats)"}},
    openapi_extra={"requestBody": _REQ_FEEDBACK},
    summary="Feedback on cards (accepted / overridden)",
    tags=["cds-hooks"],
)
async def feedback(service_id: str, request: Request, rt: RuntimeDep, claims: ClaimsDep) -> Response:
    service = _service(service_id)
    raw = await _body(request)
    try:
        body = FeedbackRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise BadHookRequest(_describe(exc), code="bad-feedback") from None
    items = []
    for item in body.feedback:
        row: dict[str, Any] = {
            "card": str(item.card),
            "outcome": item.outcome,
            "outcomeTimestamp": item.timestamp_utc(),
        }
        if item.acceptedSuggestions:
            row["acceptedSuggestions"] = [{"id": s.id} for s in item.acceptedSuggestions]
        if item.overrideReason is not None:
            reason = item.overrideReason.model_dump(exclude_none=True)
            if reason:
                row["overrideReason"] = reason
        items.append(row)
    added = await rt.store.add_feedback(service.id, items)
    if added:
        for outcome in ("accepted", "overridden"):
            metrics.count_feedback(
                service.id, outcome, min(added, sum(1 for i in items if i["outcome"] == outcome))
            )
    log.info("feedback %s items=%d new=%d", service.id, len(items), added)
    return Response(status_code=200)


health_router = APIRouter(tags=["health"])


@health_router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health_router.get(
    "/readyz",
    summary="Readiness (database reachable)",
    responses={503: {"description": "Not ready (OperationOutcome)", **_OO}},
)
async def readyz(rt: RuntimeDep) -> Response:
    if await rt.store.ping():
        return JSONResponse({"status": "ready"})
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "transient", "details": {"text": "database not reachable"}}],
    }
    return JSONResponse(outcome, status_code=503)
