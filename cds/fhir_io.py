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


_LYMPHOCYTE_CODES = "http://loinc.org|731-0,http://loinc.org|26474-7,http://loinc.org|732-8"
NATALIZUMAB_ANTIBODY_CODE = "http://loinc.org|58012-6"


def prefetch_templates(settings: Any) -> dict[str, str]:
    """Prefetch key -> CDS Hooks 2.0 template; the fallback issues the same queries itself.

    No LOINC code exists for serum natalizumab, so by default `labs` fetches recent laboratory
    Observations broadly and text matching finds the levels; a site's configured level codes narrow it.
    Date windows cannot be written in a 2.0 template: the service filters by date after reading.
    """
    pid = "{{context.patientId}}"
    level_codes = list(getattr(settings, "natalizumab_level_codes", []) or [])
    if level_codes:
        labs = f"Observation?patient={pid}&code={','.join(level_codes + [NATALIZUMAB_ANTIBODY_CODE])}&_sort=-date&_count=50"
    else:
        labs = f"Observation?patient={pid}&category=laboratory&_sort=-date&_count=200"
    return {
        "patient": f"Patient/{pid}",
        "labs": labs,
        "lymphocytes": f"Observation?patient={pid}&code={_LYMPHOCYTE_CODES}&_sort=-date&_count=10",
        "medicationStatements": f"MedicationStatement?patient={pid}&_count=100",
        "medicationRequests": f"MedicationRequest?patient={pid}&_count=100",
        "conditions": f"Condition?patient={pid}&_count=100",
        "procedures": f"Procedure?patient={pid}&status=completed&_count=100",
    }
