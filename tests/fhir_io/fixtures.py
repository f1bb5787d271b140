"""A realistic PLEX prefetch for one patient (dates relative to `now`), and small builders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

PATIENT = "pat-1"
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
LOCAL_LAB = "http://lab.example.org/codes"


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bundle(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"http://ehr.example/fhir/{r['resourceType']}/{r.get('id', 'x')}", "resource": r}
            for r in resources
        ],
    }
    if next_url:
        b["link"] = [
            {"relation": "self", "url": "http://ehr.example/fhir/x"},
            {"relation": "next", "url": next_url},
        ]
    return b


def observation(oid: str, code: dict[str, Any], when: datetime | str | None, **value: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": code,
        "subject": {"reference": f"Patient/{PATIENT}"},
    }
    if when is not None:
        r["effectiveDateTime"] = when if isinstance(when, str) else iso(when)
    r.update(value)
    return r


NTZ_LEVEL_CODE = {
    "coding": [{"system": LOCAL_LAB, "code": "NTZ-SER", "display": "Natalizumab, serum"}],
    "text": "Natalizumab concentration",
}
NTZ_TEXT_ONLY = {"text": "Tysabri (natalizumab) level"}
NTZ_ANTIBODY = {"coding": [{"system": LOINC, "code": "58012-6", "display": "Natalizumab Antibodies"}]}


def qty(value: float, unit: str, code: str | None = None, comparator: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": code or unit}
    if comparator:
        q["comparator"] = comparator
    return q


def medication_statement(mid: str, concept: dict[str, Any], status: str, **extra: Any) -> dict[str, Any]:
    r = {
        "resourceType": "MedicationStatement",
        "id": mid,
        "status": status,
        "medicationCodeableConcept": concept,
        "subject": {"reference": f"Patient/{PATIENT}"},
    }
    r.update(extra)
    return r


def rx(code: str, display: str, text: str | None = None) -> dict[str, Any]:
    cc: dict[str, Any] = {"coding": [{"system": RXNORM, "code": code, "display": display}]}
    if text:
        cc["text"] = text
    return cc


def procedure(pid: str, when: datetime, status: str = "completed", **extra: Any) -> dict[str, Any]:
    r = {
        "resourceType": "Procedure",
        "id": pid,
        "status": status,
        "code": {
            "coding": [{"system": SNOMED, "code": "127788007", "display": "Apheresis (procedure)"}],
            "text": "Therapeutic plasma exchange",
        },
        "subject": {"reference": f"Patient/{PATIENT}"},
        "performedDateTime": iso(when),
    }
    r.update(extra)
    return r


def realistic_prefetch(now: datetime = NOW) -> dict[str, Any]:
    d = lambda days, hours=0: now - timedelta(days=days, hours=hours)
    labs = bundle(
        observation("ntz-1", NTZ_LEVEL_CODE, d(12), valueQuantity=qty(24.0, "ug/mL")),
        observation("ntz-2", NTZ_LEVEL_CODE, d(7), valueQuantity=qty(9800, "ng/mL")),
        observation("ntz-3", NTZ_TEXT_ONLY, d(3), valueQuantity=qty(4.1, "mg/L")),
        observation("ntz-4", NTZ_LEVEL_CODE, d(1), valueString="<0.5 ug/mL"),
        observation("ntz-5", NTZ_LEVEL_CODE, d(2), valueQuantity={"value": 25, "unit": "IU/mL"}),
        observation("ntz-old", NTZ_LEVEL_CODE, d(900), valueQuantity=qty(30.0, "ug/mL")),
        observation(
            "ab-1",
            NTZ_ANTIBODY,
            d(20),
            valueCodeableConcept={"coding": [{"system": SNOMED, "code": "260385009", "display": "Negative"}]},
            interpretation=[
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                            "code": "N",
                        }
                    ]
                }
            ],
        ),
        observation(
            "hb-1",
            {"coding": [{"system": LOINC, "code": "718-7", "display": "Hemoglobin"}]},
            d(3),
            valueQuantity=qty(13.1, "g/dL"),
        ),
        observation(
            "lym-pct",
            {
                "coding": [
                    {"system": LOINC, "code": "26478-8", "display": "Lymphocytes/100 leukocytes in Blood"}
                ]
            },
            d(3),
            valueQuantity=qty(22, "%"),
        ),
    )
    lymphocytes = bundle(
        observation(
            "lym-1",
            {
                "coding": [
                    {
                        "system": LOINC,
                        "code": "731-0",
                        "display": "Lymphocytes [#/volume] in Blood by Automated count",
                    }
                ]
            },
            d(3),
            valueQuantity=qty(1.2, "10*3/uL"),
        ),
        observation(
            "lym-2", {"coding": [{"system": LOINC, "code": "26474-7"}]}, d(30), valueQuantity=qty(850, "/uL")
        ),
    )
    statements = bundle(
        medication_statement(
            "ms-ntz",
            rx("354770", "natalizumab", "Tysabri 300 mg IV"),
            "stopped",
            effectivePeriod={"start": iso(d(800)), "end": iso(d(35))},
            dosage=[
                {
                    "text": "300 mg IV every 4 weeks",
                    "timing": {"repeat": {"frequency": 1, "period": 4, "periodUnit": "wk"}},
                    "doseAndRate": [
                        {"doseQuantity": {"value": 300, "unit": "mg", "system": UCUM, "code": "mg"}}
                    ],
                }
            ],
        ),
        medication_statement(
            "ms-fingo", rx("1012892", "fingolimod", "Gilenya 0.5 mg"), "active", effectiveDateTime=iso(d(5))
        ),
        {
            "resourceType": "MedicationStatement",
            "id": "ms-dmf",
            "status": "intended",
            "contained": [
                {
                    "resourceType": "Medication",
                    "id": "m1",
                    "code": {
                        "coding": [{"system": RXNORM, "code": "1373478", "display": "dimethyl fumarate"}],
                        "text": "Tecfidera",
                    },
                }
            ],
            "medicationReference": {"reference": "#m1"},
            "subject": {"reference": f"Patient/{PATIENT}"},
            "dateAsserted": iso(d(1)),
        },
    )
    requests = bundle(
        {
            "resourceType": "MedicationRequest",
            "id": "mr-ntz",
            "status": "completed",
            "intent": "order",
            "medicationCodeableConcept": rx("354770", "natalizumab"),
            "subject": {"reference": f"Patient/{PATIENT}"},
            "authoredOn": iso(d(63)),
            "dosageInstruction": [
                {
                    "timing": {"repeat": {"frequency": 1, "period": 28, "periodUnit": "d"}},
                    "doseAndRate": [{"doseQuantity": {"value": 300, "unit": "mg"}}],
                }
            ],
        },
    )
    administrations = bundle(
        {
            "resourceType": "MedicationAdministration",
            "id": "ma-ntz",
            "status": "completed",
            "medicationCodeableConcept": rx("354770", "natalizumab", "Tysabri 300 mg IV"),
            "subject": {"reference": f"Patient/{PATIENT}"},
            "effectivePeriod": {"start": iso(d(35, 1)), "end": iso(d(35))},
            "dosage": {
                "text": "300 mg IV over 1 hour",
                "dose": {"value": 300, "unit": "mg", "system": UCUM, "code": "mg"},
            },
        },
    )
    patient_status = bundle(
        observation(
            "weight-1",
            {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
            d(3),
            valueQuantity={"value": 68.0, "unit": "kg", "system": UCUM, "code": "kg"},
        ),
        observation(
            "preg-1",
            {"coding": [{"system": LOINC, "code": "82810-3", "display": "Pregnancy status"}]},
            d(3),
            valueCodeableConcept={
                "coding": [{"system": LOINC, "code": "LA26683-5", "display": "Not pregnant"}]
            },
        ),
    )
    conditions = bundle(
        {
            "resourceType": "Condition",
            "id": "pml",
            "subject": {"reference": f"Patient/{PATIENT}"},
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": "confirmed",
                    }
                ]
            },
            "code": {
                "coding": [
                    {
                        "system": SNOMED,
                        "code": "22255007",
                        "display": "Progressive multifocal leukoencephalopathy",
                    }
                ]
            },
            "bodySite": [
                {"coding": [{"system": SNOMED, "code": "15926001", "display": "Brain stem"}], "text": "pons"}
            ],
            "onsetDateTime": iso(d(14)),
            "stage": [{"summary": {"text": "multilobar"}}],
            "evidence": [
                {
                    "detail": [
                        {
                            "reference": "DiagnosticReport/mri-1",
                            "display": "MRI: gadolinium-enhancing lesion, right middle cerebellar peduncle",
                        }
                    ]
                }
            ],
            "note": [{"text": "JCV DNA 350 copies/mL in CSF"}],
        },
        {
            "resourceType": "Condition",
            "id": "ms",
            "subject": {"reference": f"Patient/{PATIENT}"},
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "code": {
                "coding": [{"system": SNOMED, "code": "24700007", "display": "Multiple sclerosis"}],
                "text": "Relapsing-remitting multiple sclerosis",
            },
            "onsetDateTime": "2012-06",
        },
    )
    procedures = bundle(
        procedure("plex-1", d(6), note=[{"text": "1.5 plasma volumes exchanged, albumin 5%"}]),
        procedure("plex-2", d(4)),
        procedure("plex-3", d(2, 2)),
        procedure("plex-x", d(1), status="not-done"),
    )
    return {
        "patient": {"resourceType": "Patient", "id": PATIENT, "gender": "female", "birthDate": "1984-02-11"},
        "labs": labs,
        "lymphocytes": lymphocytes,
        "patientStatus": patient_status,
        "medicationStatements": statements,
        "medicationRequests": requests,
        "medicationAdministrations": administrations,
        "conditions": conditions,
        "procedures": procedures,
    }
