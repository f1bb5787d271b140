"""FHIR R4 JSON builders for the clinical-safety tests (issue 15): plain dicts, shaped like hospital data.

Shared by the property test (tests/safety/test_no_false_reassurance.py, in-process) and the regression
scenarios of tests/integration/safety_scenarios.py (stored on real FHIR servers). Every builder takes
the patient id and explicit datetimes, so a scenario can be placed relative to any `now`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
LOCAL_LAB = "http://lab.example.org/codes"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# A serum natalizumab level as labs send it: no LOINC code exists, a local code and text name it.
SERUM_LEVEL_CODE: dict[str, Any] = {
    "coding": [{"system": LOCAL_LAB, "code": "NTZ-SER", "display": "Natalizumab, serum"}],
    "text": "Natalizumab concentration",
}
ANTI_NATALIZUMAB_CODE: dict[str, Any] = {
    "coding": [{"system": LOINC, "code": "58012-6", "display": "Natalizumab Antibodies"}]
}
# JC virus antibody tests (codes.md): never anti-drug antibodies, whatever their text says
JCV_INDEX_CODE: dict[str, Any] = {
    "coding": [{"system": LOINC, "code": "100977-8", "display": "JC Virus Index"}],
    "text": "JC virus antibody index (Tysabri monitoring)",
}
JCV_QUALITATIVE_CODE: dict[str, Any] = {
    "coding": [{"system": LOINC, "code": "70173-0", "display": "JC Virus Antibody"}],
    "text": "JCV antibody (natalizumab patient)",
}
NATALIZUMAB_RX: dict[str, Any] = {
    "coding": [{"system": RXNORM, "code": "354770", "display": "natalizumab"}],
    "text": "Tysabri (natalizumab) 300 mg IV",
}
PLEX_CODE: dict[str, Any] = {
    "coding": [{"system": SNOMED, "code": "127788007", "display": "Apheresis (procedure)"}],
    "text": "Therapeutic plasma exchange",
}
POSITIVE: dict[str, Any] = {"coding": [{"system": SNOMED, "code": "10828004", "display": "Positive"}]}
NEGATIVE: dict[str, Any] = {"coding": [{"system": SNOMED, "code": "260385009", "display": "Negative"}]}


def iso(dt: datetime) -> str:
    """A FHIR dateTime to the second, in UTC."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day(dt: datetime) -> str:
    """A FHIR date-only value: the day is known, the time is not."""
    return dt.astimezone(UTC).strftime("%Y-%m-%d")


def subject(pid: str) -> dict[str, str]:
    return {"reference": f"Patient/{pid}"}


def qty(value: float, unit: str, code: str | None = None, comparator: str | None = None) -> dict[str, Any]:
    """A UCUM valueQuantity; `code` differs from `unit` only when a test wants them to disagree."""
    q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": code or unit}
    if comparator:
        q["comparator"] = comparator
    return q


def patient(pid: str, birth_date: str = "1979-05-14", gender: str = "female") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": "Safety", "given": ["Test"]}],
        "gender": gender,
        "birthDate": birth_date,
    }


def lab(oid: str, pid: str, code: dict[str, Any], when: str | None, **fields: Any) -> dict[str, Any]:
    """A laboratory Observation; `when` is a FHIR dateTime/date string or None (no effective time)."""
    r: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory"}]}],
        "code": code,
        "subject": subject(pid),
    }
    if when is not None:
        r["effectiveDateTime"] = when
    r.update(fields)
    return r


def serum_level(oid: str, pid: str, when: str | None, **value: Any) -> dict[str, Any]:
    """A serum natalizumab level, the specimen stated as labs state it (Observation.specimen.display)."""
    return lab(oid, pid, SERUM_LEVEL_CODE, when, specimen={"display": "Serum"}, **value)


def antibody(
    oid: str, pid: str, when: datetime, positive: bool, code: dict[str, Any] | None = None
) -> dict[str, Any]:
    return lab(
        oid,
        pid,
        code or ANTI_NATALIZUMAB_CODE,
        iso(when),
        valueCodeableConcept=POSITIVE if positive else NEGATIVE,
    )


def infusion(aid: str, pid: str, at: datetime, status: str = "completed") -> dict[str, Any]:
    """A natalizumab infusion given (MedicationAdministration): the only record of a dose date."""
    return {
        "resourceType": "MedicationAdministration",
        "id": aid,
        "status": status,
        "medicationCodeableConcept": NATALIZUMAB_RX,
        "subject": subject(pid),
        "effectiveDateTime": iso(at),
        "dosage": {
            "route": {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]},
            "dose": {"value": 300, "unit": "mg", "system": UCUM, "code": "mg"},
        },
    }


def standing_order(rid: str, pid: str, authored_on: str | None, status: str = "active") -> dict[str, Any]:
    """A natalizumab MedicationRequest q4w: when it was written, never when a dose was given."""
    r: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": NATALIZUMAB_RX,
        "subject": subject(pid),
        "dosageInstruction": [
            {
                "text": "300 mg IV every 4 weeks",
                "timing": {"repeat": {"frequency": 1, "period": 4, "periodUnit": "wk"}},
                "doseAndRate": [{"doseQuantity": {"value": 300, "unit": "mg", "system": UCUM, "code": "mg"}}],
            }
        ],
    }
    if authored_on is not None:
        r["authoredOn"] = authored_on
    return r


def statement(sid: str, pid: str, status: str, **fields: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": sid,
        "status": status,
        "medicationCodeableConcept": NATALIZUMAB_RX,
        "subject": subject(pid),
    }
    r.update(fields)
    return r


def plex_session(
    prid: str, pid: str, at: datetime, status: str = "completed", note: str | None = None, **fields: Any
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": prid,
        "status": status,
        "code": PLEX_CODE,
        "subject": subject(pid),
        "performedDateTime": iso(at),
    }
    if note:
        r["note"] = [{"text": note}]
    r.update(fields)
    return r


def condition(
    cid: str,
    pid: str,
    code: dict[str, Any],
    onset: datetime,
    *,
    body_sites: tuple[str, ...] = (),
    notes: tuple[str, ...] = (),
    stage: str | None = None,
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "subject": subject(pid),
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "verificationStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}
            ]
        },
        "code": code,
        "onsetDateTime": iso(onset),
    }
    if body_sites:
        r["bodySite"] = [{"text": s} for s in body_sites]
    if notes:
        r["note"] = [{"text": n} for n in notes]
    if stage:
        r["stage"] = [{"summary": {"text": stage}}]
    return r


PML_CODE: dict[str, Any] = {
    "coding": [
        {"system": SNOMED, "code": "22255007", "display": "Progressive multifocal leukoencephalopathy"}
    ]
}
IRIS_CODE: dict[str, Any] = {"text": "PML-IRIS (immune reconstitution inflammatory syndrome)"}


def pml(cid: str, pid: str, onset: datetime, **extent: Any) -> dict[str, Any]:
    return condition(cid, pid, PML_CODE, onset, **extent)


def plex_order(srid: str, pid: str, sessions: int = 5) -> dict[str, Any]:
    """The draft ServiceRequest the hook is about (context.draftOrders)."""
    return {
        "resourceType": "ServiceRequest",
        "id": srid,
        "status": "draft",
        "intent": "order",
        "code": PLEX_CODE,
        "subject": subject(pid),
        "quantityQuantity": {"value": sessions, "unit": "sessions"},
        "occurrenceTiming": {"repeat": {"frequency": 1, "period": 2, "periodUnit": "d"}},
        "note": [{"text": "1.5 plasma volumes per session, albumin 5%"}],
    }


# ---------------------------------------------------------------- patient status (item 15)

PREGNANCY_STATUS_CODE: dict[str, Any] = {
    "coding": [{"system": LOINC, "code": "82810-3", "display": "Pregnancy status"}],
    "text": "Pregnancy status",
}
PREGNANT: dict[str, Any] = {"coding": [{"system": SNOMED, "code": "77386006", "display": "Pregnant"}]}
BREASTFEEDING_STATUS_CODE: dict[str, Any] = {
    "coding": [{"system": LOINC, "code": "63895-7", "display": "Breastfeeding status"}],
    "text": "Breastfeeding status",
}
BREASTFEEDING: dict[str, Any] = {
    "coding": [{"system": SNOMED, "code": "413712001", "display": "Breastfeeding (finding)"}]
}
BODY_WEIGHT_CODE: dict[str, Any] = {
    "coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}],
    "text": "Body weight",
}


def status_observation(
    oid: str, pid: str, code: dict[str, Any], when: datetime, category: str, **value: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}],
        "code": code,
        "subject": subject(pid),
        "effectiveDateTime": iso(when),
        **value,
    }
