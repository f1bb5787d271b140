"""Issue 15 input items on the real FHIR servers (sekmet, Medplum; a live sandbox with `make test-live`).

One patient with the adversarial records of the issue is stored on the server; the service's reader
then builds the facts twice: from the FHIR server's own search results (`fhirServer` reads, the
templates of prefetch_templates) and from a prefetch the server resolved. Both must give the same
facts, and each item's rule must hold in them: the reads, not only the parser, are under test.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from cds.fhir_io import FhirReader, LoadResult, prefetch_templates
from cds.settings import Settings
from tests.integration.service_support import FHIR_TIMEOUTS_S
from tests.support.fhir import FhirServer, load_resources, prefetch_from_server, run_suffix, with_id_suffix

NOW = datetime.now(UTC).replace(microsecond=0)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
LAB = "http://example.org/fhir/CodeSystem/local-lab"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PID = "safety-inputs"


def at(days: float) -> str:
    return (NOW - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _obs(
    oid: str, days: float, code: dict[str, Any], category: str = "laboratory", **value: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"{PID}-{oid}",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": code,
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": at(days),
        **value,
    }


NTZ = {"coding": [{"system": LAB, "code": "NTZ-LVL", "display": "Natalizumab serum concentration"}]}
TYSABRI = {
    "coding": [{"system": RXNORM, "code": "354770", "display": "natalizumab"}],
    "text": "Tysabri 300 mg IV",
}


def resources() -> list[dict[str, Any]]:
    subject = {"reference": f"Patient/{PID}"}
    return [
        {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "2009"},
        # item 2: a JC virus index that names Tysabri; an explicit anti-drug antibody result
        _obs("jcv", 9, {"text": "JC virus antibody index (Tysabri monitoring)"}, valueString="positive"),
        _obs(
            "ada",
            8,
            {"coding": [{"system": LOINC, "code": "58012-6"}], "text": "Natalizumab Antibodies"},
            valueString="negative",
        ),
        # item 4: a CSF result
        _obs(
            "csf",
            7,
            {"text": "Natalizumab, CSF"},
            valueQuantity={"value": 0.2, "unit": "ug/mL", "system": UCUM, "code": "ug/mL"},
        ),
        # item 5: grouping comma, unit conflict
        _obs("comma", 6, NTZ, valueString="12,500 ng/mL"),
        _obs(
            "conflict",
            5.5,
            NTZ,
            valueQuantity={"value": 28, "unit": "ug/mL", "system": UCUM, "code": "ng/mL"},
        ),
        # item 6: not detected with a referenceRange
        _obs(
            "nd",
            1,
            NTZ,
            valueString="Not detected",
            referenceRange=[{"high": {"value": 0.5, "unit": "ug/mL", "system": UCUM, "code": "ug/mL"}}],
        ),
        # item 14 (input): two results at one time
        _obs("same-a", 3, NTZ, valueQuantity={"value": 9, "unit": "ug/mL", "system": UCUM, "code": "ug/mL"}),
        {
            **_obs(
                "same-b",
                3,
                NTZ,
                valueQuantity={"value": 0.9, "unit": "ug/mL", "system": UCUM, "code": "ug/mL"},
            ),
        },
        # item 3: a 3-year-old standing order, and the infusions actually given
        {
            "resourceType": "MedicationRequest",
            "id": f"{PID}-order",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": TYSABRI,
            "subject": subject,
            "authoredOn": at(3 * 365),
        },
        {
            "resourceType": "MedicationAdministration",
            "id": f"{PID}-given",
            "status": "completed",
            "medicationCodeableConcept": TYSABRI,
            "subject": subject,
            "effectiveDateTime": (NOW - timedelta(days=20)).date().isoformat(),  # item 8: day only
            "dosage": {"dose": {"value": 300, "unit": "mg", "system": UCUM, "code": "mg"}},
        },
        {
            "resourceType": "MedicationAdministration",
            "id": f"{PID}-not-given",
            "status": "not-done",
            "medicationCodeableConcept": TYSABRI,
            "subject": subject,
            "effectiveDateTime": at(2),
        },
        # item 8: a session with its period
        {
            "resourceType": "Procedure",
            "id": f"{PID}-plex",
            "status": "completed",
            "code": {"text": "Therapeutic plasma exchange"},
            "subject": subject,
            "performedPeriod": {"start": at(4), "end": at(3.9)},
        },
        # item 15: pregnancy status and weight
        _obs(
            "preg",
            2,
            {"coding": [{"system": LOINC, "code": "82810-3", "display": "Pregnancy status"}]},
            "social-history",
            valueCodeableConcept={"coding": [{"system": LOINC, "code": "LA15173-0", "display": "Pregnant"}]},
        ),
        _obs(
            "weight",
            2.5,
            {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
            "vital-signs",
            valueQuantity={"value": 110, "unit": "lbs", "system": UCUM, "code": "[lb_av]"},
        ),
    ]


@pytest.fixture(scope="module")
def stored(fhir_server: FhirServer) -> tuple[FhirServer, str]:
    suffix = run_suffix("safety")
    load_resources(fhir_server, with_id_suffix(resources(), suffix))
    return fhir_server, PID + suffix


def _settings(server: FhirServer) -> Settings:
    timeout_s, deadline_s = FHIR_TIMEOUTS_S.get(server.kind, FHIR_TIMEOUTS_S["default"])
    return Settings(
        _env_file=None, auth="off", fhir_timeout_s=timeout_s, fhir_deadline_s=deadline_s, cache_ttl_s=0
    )


async def _read(server: FhirServer, pid: str, prefetch: dict[str, Any] | None) -> LoadResult:
    async with httpx.AsyncClient() as http:
        reader = FhirReader(http, _settings(server))
        try:
            if prefetch is None:
                return await reader.load(pid, None, server.base_url, server.token, 300)
            return await reader.load(pid, prefetch, None, None, None)
        finally:
            await reader.aclose()


async def test_server_reads_and_prefetch_give_the_same_safe_facts(stored: tuple[FhirServer, str]) -> None:
    server, pid = stored
    read = await _read(server, pid, None)
    assert set(read.sources.values()) == {"fhir"}, read.problems
    prefetched = await _read(
        server, pid, prefetch_from_server(server, prefetch_templates(_settings(server)), pid)
    )
    assert set(prefetched.sources.values()) == {"prefetch"}
    assert read.facts == prefetched.facts and read.problems == prefetched.problems == ()
    facts = read.facts
    suffix = pid[len(PID) :]

    def ids(items: Any) -> list[str]:
        return sorted(i.source.rsplit("/", 1)[1].removesuffix(suffix).removeprefix(f"{PID}-") for i in items)

    # item 2: the JCV result is neither an antibody result nor a level
    assert ids(facts.antibodies) == ["ada"] and facts.antibodies[0].positive is False
    # items 4, 5, 6, 14: usable levels, censored "not detected", both same-time results
    assert ids(facts.levels) == ["comma", "nd", "same-a", "same-b"]
    by_id = {i.source.rsplit("/", 1)[1].removesuffix(suffix): i for i in facts.levels}
    assert by_id[f"{PID}-comma"].value_ug_per_ml == pytest.approx(12.5)
    nd = by_id[f"{PID}-nd"]
    assert (nd.comparator, nd.value_ug_per_ml, nd.qualitative) == ("<", 0.5, "Not detected")
    assert {(u.source.rsplit("/", 1)[1].removesuffix(suffix), u.code) for u in facts.unusable} == {
        (f"{PID}-csf", "specimen"),
        (f"{PID}-conflict", "unit-conflict"),
    }
    # item 3: one dose, from the administration given; the order is a request, never a dose
    (dose,) = facts.doses
    assert dose.source.endswith(f"{PID}-given{suffix}") and dose.dose_mg == 300 and dose.date_only
    assert sorted(m.record for m in facts.medications) == ["administration", "administration", "request"]
    # item 8: the session's end time
    (session,) = facts.sessions
    assert session.ended_at == NOW - timedelta(days=3.9) and not session.date_only
    # item 15: the patient
    details = facts.patient
    assert details.birth_date == date(2009, 12, 31)
    assert details.pregnant is True and details.pregnancy_source.endswith(f"{PID}-preg{suffix}")
    assert details.weight_kg == pytest.approx(110 * 0.45359237)
