"""The FHIR resources the cards' suggestions carry, each validated against fhir.resources R4B.

A draft natalizumab level (ServiceRequest), draft immunomodulator orders (MedicationRequest) and the draft
PLEX order with a new session count. `validate_emitted` is the one seam to R4B: a resource is validated
in full once per shape (cds.fhir.r4b: the same resource up to a checked id, subject reference and
date-times), because a full R4B validation costs far more than the rest of a card.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from cds.engine.drugs import RXNORM_INGREDIENTS
from cds.fhir import r4b as r4b_shape
from cds.fhir.orders import PlexOrder
from cds.hooks.cards.markdown import fhir_datetime

__all__ = [
    "LEVEL_TEXT",
    "REGIMENS",
    "RXCUI",
    "course_update",
    "level_coding",
    "level_request",
    "medication_request",
    "validate_emitted",
]

log = logging.getLogger("cds.hooks.cards")

LEVEL_TEXT = "Natalizumab [Mass/volume] in Serum or Plasma"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

# RxNorm ingredient RxCUIs of the ingredients a suggestion may code (shared/docs/codes.md §4, VERIFIED
# rows only; interferons conflict → text only), from the engine's one table (cds.engine.drugs)
_CODED = (
    "natalizumab",
    "glatiramer acetate",
    "peginterferon beta-1a",
    "teriflunomide",
    "dimethyl fumarate",
    "diroximel fumarate",
    "monomethyl fumarate",
    "ocrelizumab",
    "ofatumumab",
    "rituximab",
    "fingolimod",
    "siponimod",
    "ozanimod",
    "ponesimod",
    "alemtuzumab",
    "cladribine",
    "mitoxantrone",
)
_RXCUI_OF = {name: code for code, name in RXNORM_INGREDIENTS.items()}
RXCUI: dict[str, str] = {name: _RXCUI_OF[name] for name in _CODED}

# Label regimens of the immunomodulators a draft may name (a suggested order states its regimen: some
# EHRs fill an unsigned order with their own defaults), in the order the DMT card prefers them
REGIMENS: dict[str, str] = {
    "glatiramer acetate": "20 mg subcutaneously once daily",
    "peginterferon beta-1a": "125 micrograms subcutaneously every 14 days",
    "interferon beta-1a": "30 micrograms intramuscularly once weekly",
    "interferon beta-1b": "250 micrograms subcutaneously every other day",
}

DMT_NOTE = (
    "Draft: disease-modifying therapy after natalizumab PML. Start once the PLEX course is "
    "over and the treating team judges PML stable; it does not prevent rebound."
)


def validate_emitted(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate a resource we put in a suggestion against fhir.resources R4B; raise ValueError if invalid.

    In full once per shape (cds.fhir.r4b); a resource of a shape that already passed is not re-validated.
    Every resource here holds plain JSON values (built here or parsed from the request), for which
    r4b.parsed_json_key is one-to-one and cheaper than r4b.shape_key."""
    key = r4b_shape.parsed_json_key(resource)
    if r4b_shape.is_known_valid(key):
        return resource
    rtype = str(resource.get("resourceType"))
    try:
        model = get_fhir_model_class(rtype)
    except ValueError as exc:
        raise ValueError(f"unknown resourceType {rtype!r}") from exc
    try:
        model.model_validate(resource)
    except Exception as exc:  # pydantic ValidationError and fhir_core errors
        raise ValueError(f"emitted {rtype} is not valid FHIR R4B: {type(exc).__name__}") from exc
    r4b_shape.remember(key)
    return resource


def level_coding(codes: list[str]) -> tuple[str, str] | None:
    """The first "system|code" of the configured natalizumab level codes (Settings), as (system, code)."""
    for entry in codes:
        if "|" in entry:
            system, code = entry.split("|", 1)
            return system, code
    return None


def level_request(
    patient_id: str,
    at: datetime,
    after_session: int | None,
    coding: tuple[str, str] | None,
    *,
    completed: int = 0,
) -> dict[str, Any]:
    """A draft ServiceRequest for a serum natalizumab level at `at` (after `after_session`, if given)."""
    code: dict[str, Any] = {"text": LEVEL_TEXT}
    if coding is not None:
        code["coding"] = [{"system": coding[0], "code": coding[1], "display": LEVEL_TEXT}]
    if after_session:
        when = (
            f"after {after_session} more PLEX session{'s' if after_session != 1 else ''}, before the next one"
            if completed
            else f"after PLEX session {after_session}, before session {after_session + 1}"
        )
    else:
        when = "before the next PLEX session"
    resource = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "108252007",
                        "display": "Laboratory procedure",
                    }
                ]
            }
        ],
        "code": code,
        "subject": {"reference": f"Patient/{patient_id}"},
        "occurrenceDateTime": fhir_datetime(at),
        "note": [{"text": f"Serum natalizumab level {when}, to check washout (PML-PLEX decision support)."}],
    }
    return validate_emitted(resource)


def medication_request(patient_id: str, ingredient: str, now: datetime) -> dict[str, Any]:
    """A draft MedicationRequest (proposal) for `ingredient` with its label regimen, authored `now`."""
    concept: dict[str, Any] = {"text": ingredient}
    if ingredient in RXCUI:
        concept["coding"] = [{"system": RXNORM, "code": RXCUI[ingredient], "display": ingredient}]
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": fhir_datetime(now),
        "note": [{"text": DMT_NOTE}],
    }
    regimen = REGIMENS.get(ingredient)
    if regimen:
        resource["dosageInstruction"] = [{"text": regimen}]
    return validate_emitted(resource)


def course_update(order: PlexOrder, sessions: int) -> dict[str, Any] | None:
    """The draft PLEX order with its session count set to `sessions` (whole resource, as `update` needs)."""
    res = copy.deepcopy(order.resource)
    if not res.get("id") or res.get("resourceType") != "ServiceRequest":
        return None
    raw_qty = res.get("quantityQuantity")
    qty: dict[str, Any] = raw_qty if isinstance(raw_qty, dict) else {}
    res["quantityQuantity"] = {**qty, "value": sessions, "unit": qty.get("unit") or "sessions"}
    timing = res.get("occurrenceTiming")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    if isinstance(repeat, dict) and "count" in repeat:
        repeat["count"] = sessions
    try:
        return validate_emitted(res)
    except ValueError:
        log.warning("draft PLEX order is not valid R4B; no update suggestion")
        return None
