"""The services this CDS service offers: one table read by discovery, routing and the docs.

Distinct ids per hook, because the CDS Hooks Sandbox keys configured services by URL.
"""

from __future__ import annotations

from dataclasses import dataclass

from cds.fhir_io import prefetch_templates
from cds.hooks.models import ServiceDefinition
from cds.settings import Settings


@dataclass(frozen=True, slots=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str


USAGE = (
    "Acts only on a plasma exchange or immunoadsorption order (ServiceRequest) for a patient with "
    "natalizumab exposure. Works from the prefetch alone; when a prefetch key is missing it reads the "
    "FHIR server with the fhirAuthorization token (patient/*.read for Patient, Observation, "
    "MedicationStatement, MedicationRequest, Condition and Procedure). A partial prefetch degrades: the "
    "cards are made from what is there and name what could not be read. It answers 412 only when neither "
    "medications nor laboratory results can be had. An order-select/order-sign hook name sent to the "
    "other service is answered as the service's own hook."
)

SERVICES: tuple[CdsService, ...] = (
    CdsService(
        id="pml-plex-select",
        hook="order-select",
        title="PLEX for natalizumab PML: sessions, IRIS and next DMT",
        description=(
            "When plasma exchange is selected for a patient with natalizumab-associated PML: estimates "
            "how many more PLEX sessions bring serum natalizumab below target, flags IRIS risk and the "
            "watch window, and lists which disease-modifying therapies are safe to start afterwards."
        ),
    ),
    CdsService(
        id="pml-plex-sign",
        hook="order-sign",
        title="PLEX for natalizumab PML: check before signing",
        description=(
            "At signing of a plasma exchange order for a patient with natalizumab exposure: the same "
            "estimate, IRIS and DMT guidance, re-evaluated on the complete order (including the ordered "
            "number of sessions)."
        ),
    ),
)

BY_ID: dict[str, CdsService] = {s.id: s for s in SERVICES}


def definitions(settings: Settings) -> list[ServiceDefinition]:
    """Discovery entries, built once per app from settings (prefetch templates depend on them)."""
    prefetch = prefetch_templates(settings)
    return [
        ServiceDefinition(
            hook=s.hook,
            title=s.title,
            description=s.description,
            id=s.id,
            prefetch=dict(prefetch),
            usageRequirements=USAGE,
        )
        for s in SERVICES
    ]
