"""The one place that reads FHIR: prefetch first, then fhirServer; resources → engine.domain.

CONTRACT (filled in by the fhir_io work; signatures are fixed, bodies are not yet):

    PREFETCH: dict[str, str]        prefetch key -> CDS Hooks 2.0 template (discovery publishes it)
    plex_orders(draft_orders, selections, settings) -> list[PlexOrder]
    FhirReader(http, settings).load(patient_id, prefetch, fhir_server, token, expires_in) -> LoadResult
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds.engine.domain import PatientFacts, PlexPlan


@dataclass(frozen=True)
class PlexOrder:
    reference: str  # "ServiceRequest/abc" (as in selections)
    plan: PlexPlan
    text: str  # order name as written (FHIR text: escape before markdown)
    resource: dict[str, Any]  # the draft resource as sent, for an `update` suggestion


@dataclass(frozen=True)
class LoadResult:
    facts: PatientFacts
    exposure: bool  # natalizumab medication or level on record
    sources: dict[str, str] = field(default_factory=dict)  # key -> prefetch|fhir|cache|missing|error
    problems: tuple[str, ...] = ()  # plain text the cards show: what could not be read
    skipped: int = 0  # malformed entries skipped
