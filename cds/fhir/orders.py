"""Draft orders → plans: the plasma exchange / immunoadsorption ServiceRequests of a hook's
draftOrders, each with the PlexPlan it writes (sessions, interval, volumes, modality, first date)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds.engine.domain import PlexPlan
from cds.errors import BadHookRequest
from cds.fhir import r4b, shapes, terms
from cds.fhir.elements import (
    codings_of,
    concept_label,
    first_datetime,
    plasma_volumes_from,
    texts_of,
    validate_resource,
)
from cds.settings import Settings

log = logging.getLogger("cds.fhir")

__all__ = ["PlexOrder", "plex_orders"]


@dataclass(frozen=True)
class PlexOrder:
    reference: str  # "ServiceRequest/abc" (as in selections)
    plan: PlexPlan
    text: str  # order name as written (FHIR text: escape before markdown)
    resource: dict[str, Any]  # the draft resource as sent, for an `update` suggestion


def _norm_selection(value: str) -> str:
    parts = value.strip().rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else value.strip()


def _safe_when(*candidates: str | None) -> datetime | None:
    try:
        found = first_datetime(*candidates)
    except (ValueError, OverflowError):  # impossible dates; year 1 with a +hh:mm offset is before UTC year 1
        return None
    return found[0] if found else None


_DEFAULT_PLAN = PlexPlan()
_VOLUME_UNITS = re.compile(r"^(m|d|c|u)?l$", re.IGNORECASE)


def _plan(sr: shapes.ServiceRequest, modality: str) -> PlexPlan:
    ordered: int | None = None
    q = sr.get("quantityQuantity")
    qvalue = q.get("value") if q is not None else None
    if (
        q is not None
        and qvalue is not None
        and 0 < qvalue <= 100
        and float(qvalue).is_integer()
        and not _VOLUME_UNITS.match((q.get("code") or q.get("unit") or "").strip())
    ):
        ordered = int(qvalue)
    timing = sr.get("occurrenceTiming")
    repeat = timing.get("repeat") if timing else None
    if ordered is None and repeat is not None and repeat.get("count"):
        ordered = repeat.get("count")
    texts = [
        *(n["text"] for n in sr.get("note", ())),
        sr.get("patientInstruction"),
        *(t for cc in sr.get("orderDetail", ()) for t in texts_of(cc)),
    ]
    interval = (
        terms.interval_days(repeat.get("frequency"), repeat.get("period"), repeat.get("periodUnit"))
        if repeat
        else None
    )
    if interval is None and timing is not None and (tcode := timing.get("code")) is not None:
        interval = terms.interval_from_text(" ".join(texts_of(tcode)))
    if interval is None:
        interval = next((i for t in texts if (i := terms.interval_from_text(t))), None)
    if interval is None or not 0.5 <= interval <= 14:
        interval = _DEFAULT_PLAN.interval_days
    occurrence = sr.get("occurrencePeriod")
    first = _safe_when(
        sr.get("occurrenceDateTime"),
        occurrence.get("start") if occurrence else None,
        min(timing["event"]) if timing and timing.get("event") else None,
        bounds.get("start") if repeat and (bounds := repeat.get("boundsPeriod")) else None,
    )
    volumes = plasma_volumes_from(sr.get("extension", ()), (*texts, *texts_of(sr.get("code"))))
    return PlexPlan(
        plasma_volumes_per_session=volumes or _DEFAULT_PLAN.plasma_volumes_per_session,
        interval_days=interval,
        ordered_sessions=ordered,
        modality=modality,  # type: ignore[arg-type]
        first_session_at=first,
    )


def plex_orders(draft_orders: Any, selections: list[str] | None, settings: Settings) -> list[PlexOrder]:
    """The plasma exchange / immunoadsorption ServiceRequests a hook is about.

    order-select: only the entries named in `selections`; order-sign (`selections is None`): every
    entry, whatever its status (re-signed orders included) except entered-in-error. Other resource
    types are ignored; a malformed entry is skipped. `draftOrders` must be a Bundle (its `type` may
    be missing, as the CDS Hooks Sandbox sends it), else BadHookRequest. A matched order is also
    validated with fhir.resources R4B (in full once per shape, cds.fhir.r4b). `reference` is "" when
    the draft has no id.
    """
    if not isinstance(draft_orders, dict) or draft_orders.get("resourceType") != "Bundle":
        raise BadHookRequest("context.draftOrders must be a FHIR Bundle", code="draft-orders")
    entries = draft_orders.get("entry", [])
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise BadHookRequest("context.draftOrders.entry must be a list", code="draft-orders")
    wanted = None if selections is None else {_norm_selection(s) for s in selections if isinstance(s, str)}
    extra = terms.parse_code_list(settings.plex_codes)
    orders: list[PlexOrder] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "ServiceRequest":
            continue
        rid = resource.get("id")
        reference = f"ServiceRequest/{rid}" if isinstance(rid, str) and rid else ""
        if wanted is not None and reference not in wanted:
            continue
        sr: shapes.ServiceRequest | None = validate_resource(resource, strict=False)  # type: ignore[assignment]
        if sr is None:
            log.warning("draft ServiceRequest skipped: malformed")
            continue
        if sr["status"] == "entered-in-error":
            continue
        sr_code = sr.get("code")
        modality = terms.plex_modality(codings_of(sr_code), texts_of(sr_code), extra)
        if modality is None:
            continue
        key = r4b.parsed_json_key(resource)  # draftOrders come from the request's JSON
        if not r4b.is_known_valid(key):  # full R4B once per shape of draft order
            if not r4b.r4b_valid(resource):
                log.warning("draft ServiceRequest skipped: not valid FHIR R4B")
                continue
            r4b.remember(key)
        orders.append(
            PlexOrder(reference, _plan(sr, modality), concept_label(sr_code) or "plasma exchange", resource)
        )
    return orders
