"""What a prefetch key holds and how a Bundle's resources are read from it: pure, no I/O (paging
and the reads themselves are cds/fhir_io.py's)."""

from __future__ import annotations

from typing import Any

__all__ = ["KEY_LABELS", "KEY_TYPES", "bundle_resources", "key_resources", "next_link", "searched_type"]

KEY_TYPES: dict[str, frozenset[str]] = {
    "patient": frozenset({"Patient"}),
    "labs": frozenset({"Observation"}),
    "lymphocytes": frozenset({"Observation"}),
    "patientStatus": frozenset({"Observation"}),
    "medicationStatements": frozenset({"MedicationStatement", "Medication"}),
    "medicationRequests": frozenset({"MedicationRequest", "Medication"}),
    "medicationAdministrations": frozenset({"MedicationAdministration", "Medication"}),
    "conditions": frozenset({"Condition"}),
    "procedures": frozenset({"Procedure"}),
}


# what each key holds, in the words of a card that says it could not be read
KEY_LABELS: dict[str, str] = {
    "patient": "the patient record",
    "labs": "laboratory results",
    "lymphocytes": "lymphocyte counts",
    "patientStatus": "pregnancy, breastfeeding and weight observations",
    "medicationStatements": "medication statements",
    "medicationRequests": "medication orders",
    "medicationAdministrations": "medication administrations",
    "conditions": "conditions",
    "procedures": "procedures",
}


def next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"] or None
    return None


def bundle_resources(bundle: dict[str, Any], wanted: frozenset[str] | None = None) -> list[Any] | None:
    """The Bundle's resources (None when `entry` is not a list); with `wanted`, as key_resources keeps them."""
    entries = bundle.get("entry", [])
    if entries is None:
        return []
    if not isinstance(entries, list):
        return None
    out: list[Any] = []
    for entry in entries:
        if not isinstance(entry, dict):
            out.append(entry)  # counted as skipped when parsed
            continue
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode") == "outcome":
            continue
        r = entry.get("resource")
        if (
            wanted is None
            or not isinstance(r, dict)
            or not isinstance(rtype := r.get("resourceType"), str)  # kept, counted as skipped when parsed
            or rtype in wanted
        ):
            out.append(r)
    return out


def key_resources(key: str, resources: list[Any]) -> list[Any]:
    """Keep the resource types a key asks for (and malformed entries, to be counted)."""
    wanted = KEY_TYPES[key]
    return [
        r
        for r in resources
        if not isinstance(r, dict)
        or not isinstance(r.get("resourceType"), str)
        or r.get("resourceType") in wanted
    ]


def searched_type(key: str) -> str:
    """The resource type a key's search reads (for logs and metrics)."""
    return min(KEY_TYPES[key] - {"Medication"})
