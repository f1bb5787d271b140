"""Embedded demo patients and a CDS Hooks request builder (used by `make run`, /demo, `cds demo`, tests).

    scenarios() -> list[str]
    patient(name, now) -> DemoPatient
    resolve_prefetch(templates, resources, patient_id) -> {key: searchset Bundle | resource | None}
    hook_request(p, "order-select" | "order-sign", prefetch=True, settings=None, fhir_server=None,
                 token=None) -> CDS Hooks 2.0 request body

All data are synthetic; dates are offsets from `now`, so the demo works on any day.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

from cds.demo import scenarios as _scenarios

if TYPE_CHECKING:  # cds.settings is imported at call time: the demo data loads without the app's settings
    from cds.settings import Settings

__all__ = [
    "DEMO_FHIR_BASE",
    "DEMO_USER_ID",
    "DemoPatient",
    "hook_request",
    "patient",
    "resolve_prefetch",
    "scenarios",
]

DEMO_USER_ID = "Practitioner/demo-neuro"
DEMO_FHIR_BASE = "http://demo.invalid/fhir"  # fullUrl base of in-memory search results (never fetched)
TOKEN_SUBJECT = "cds-pml-plex"


@dataclass(frozen=True)
class DemoPatient:
    name: str  # scenario name, e.g. "high-level"
    patient_id: str  # "demo-high-level"
    title: str
    description: str
    resources: list[dict[str, Any]] = field(repr=False)  # what a FHIR server holds for this patient
    draft_order: dict[str, Any] = field(repr=False)  # the unsigned ServiceRequest in draftOrders
    expected: dict[str, Any] = field(default_factory=dict)  # qualitative card expectations (scenarios.py)


def scenarios() -> list[str]:
    """Stable scenario names, in demo-page order."""
    return _scenarios.scenario_names()


def patient(name: str, now: datetime) -> DemoPatient:
    """The demo patient `name` with every date placed relative to `now` (naive datetimes are UTC)."""
    pid, sc, resources, order = _scenarios.build(name, now)
    return DemoPatient(
        name=name,
        patient_id=pid,
        title=sc.title,
        description=sc.description,
        resources=resources,
        draft_order=order,
        expected=copy.deepcopy(sc.expected),
    )


# ---------------------------------------------------------------- in-memory prefetch evaluator

# the R4 `date` search parameter, per resource type, as FHIR paths tried in order
_DATE_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Observation": (("effectiveDateTime",), ("effectivePeriod", "start"), ("effectiveInstant",), ("issued",)),
    "Procedure": (("performedDateTime",), ("performedPeriod", "start")),
}
_CODE_ELEMENT = {
    "MedicationStatement": "medicationCodeableConcept",
    "MedicationRequest": "medicationCodeableConcept",
    "MedicationAdministration": "medicationCodeableConcept",
}


def _get(resource: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = resource
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _date_key(resource: dict[str, Any]) -> datetime:
    for path in _DATE_PATHS[resource["resourceType"]]:
        v = _get(resource, path)
        if isinstance(v, str):
            return datetime.fromisoformat(v) if "T" in v else datetime.fromisoformat(v + "T00:00:00+00:00")
    return datetime.min.replace(tzinfo=UTC)


def _codings(value: Any) -> list[dict[str, Any]]:
    concepts = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return [c for cc in concepts if isinstance(cc, dict) for c in cc.get("coding", []) if isinstance(c, dict)]


def _token_match(codings: list[dict[str, Any]], tokens: list[str]) -> bool:
    for tok in tokens:
        system, sep, code = tok.partition("|")
        if not sep:
            system, code = None, tok  # type: ignore[assignment]
        for c in codings:
            if system is None and c.get("code") == code:
                return True
            if system == "" and "system" not in c and c.get("code") == code:
                return True
            if system and c.get("system") == system and (code == "" or c.get("code") == code):
                return True
    return False


def _search(rtype: str, query: str, resources: list[dict[str, Any]], base_url: str) -> dict[str, Any]:
    matches = [r for r in resources if r.get("resourceType") == rtype]
    sort: str | None = None
    count: int | None = None
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=True):
        if key in ("patient", "subject"):
            ref = value if "/" in value else f"Patient/{value}"
            matches = [r for r in matches if _get(r, ("subject", "reference")) == ref]
        elif key == "code":
            element = _CODE_ELEMENT.get(rtype, "code")
            matches = [r for r in matches if _token_match(_codings(r.get(element)), value.split(","))]
        elif key == "category":
            matches = [r for r in matches if _token_match(_codings(r.get("category")), value.split(","))]
        elif key == "status":
            matches = [r for r in matches if r.get("status") in value.split(",")]
        elif key == "_sort":
            if value.lstrip("-") != "date" or rtype not in _DATE_PATHS:
                raise ValueError(f"unsupported _sort={value} for {rtype}")
            sort = value
        elif key == "_count":
            count = int(value)
        else:
            raise ValueError(f"search parameter {key!r} is not supported by the demo evaluator")
    if sort:
        matches = sorted(matches, key=_date_key, reverse=sort.startswith("-"))
    total = len(matches)
    if count is not None:
        matches = matches[:count]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": f"{base_url}/{rtype}?{query}"}],
    }
    if matches:  # FHIR JSON has no empty arrays
        bundle["entry"] = [
            {
                "fullUrl": f"{base_url}/{rtype}/{r['id']}",
                "resource": copy.deepcopy(r),
                "search": {"mode": "match"},
            }
            for r in matches
        ]
    return bundle


def resolve_prefetch(
    templates: dict[str, str],
    resources: list[dict[str, Any]],
    patient_id: str,
    *,
    base_url: str = DEMO_FHIR_BASE,
) -> dict[str, Any]:
    """Evaluate prefetch templates over `resources` in memory, as a FHIR server would.

    Supports exactly the syntax the service's templates use: `Type/id` reads (the resource, or None),
    and `Type?patient=…&code=sys|code,…&category=…&status=…&_sort=-date&_count=N` searches (a searchset
    Bundle with `total` = all matches and the first `_count` entries). Anything else raises ValueError,
    so a template change the evaluator does not understand fails loudly instead of silently.
    """
    out: dict[str, Any] = {}
    for key, template in templates.items():
        url = template.replace("{{context.patientId}}", patient_id)
        if "{{" in url:
            raise ValueError(f"prefetch {key}: unsupported token in {template!r}")
        path, sep, query = url.partition("?")
        if sep:
            out[key] = _search(path, query, resources, base_url.rstrip("/"))
        else:
            rtype, _, rid = path.partition("/")
            found = [r for r in resources if r.get("resourceType") == rtype and r.get("id") == rid]
            out[key] = copy.deepcopy(found[0]) if found else None
    return out


# ---------------------------------------------------------------- CDS Hooks request


def hook_request(
    p: DemoPatient,
    hook: Literal["order-select", "order-sign"],
    *,
    prefetch: bool = True,
    settings: Settings | None = None,
    fhir_server: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """A full CDS Hooks 2.0 request for `p`'s draft order, as an EHR would send it.

    `draftOrders` has no Bundle.type (as the CDS Hooks Sandbox sends it). With `prefetch`, every key of
    the service's own templates is resolved in memory (keys that resolve to nothing are omitted, as an
    EHR omits what it could not fetch). `fhir_server` and `token` add fhirServer / fhirAuthorization.
    """
    if hook not in ("order-select", "order-sign"):
        raise ValueError(f"hook must be order-select or order-sign, not {hook!r}")
    order = copy.deepcopy(p.draft_order)
    context: dict[str, Any] = {
        "userId": DEMO_USER_ID,
        "patientId": p.patient_id,
        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": order}]},
    }
    if hook == "order-select":
        context["selections"] = [f"{order['resourceType']}/{order['id']}"]
    body: dict[str, Any] = {"hookInstance": str(uuid.uuid4()), "hook": hook}
    if fhir_server:
        body["fhirServer"] = fhir_server
        if token:
            body["fhirAuthorization"] = {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "patient/*.read",
                "subject": TOKEN_SUBJECT,
                "patient": p.patient_id,
            }
    elif token:
        raise ValueError(
            "a token needs fhir_server (CDS Hooks invariant: fhirAuthorization needs fhirServer)"
        )
    body["context"] = context
    if prefetch:
        if settings is None:
            from cds.settings import Settings

            settings = Settings(auth="off")
        from cds.fhir_io import prefetch_templates

        resolved = resolve_prefetch(prefetch_templates(settings), p.resources, p.patient_id)
        body["prefetch"] = {k: v for k, v in resolved.items() if v is not None}
    return body
