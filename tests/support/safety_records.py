"""One patient holding the adversarial records of issue 15 (input side), as a FHIR server would store them.

    records(now) -> list of resources for patient PID (ids "<PID>-<name>"), dates relative to `now`

Used by tests/integration/test_safety_inputs_servers.py (the reads on sekmet and Medplum); a
service-level test can load the same records (tests.support.fhir.load_resources with an id suffix)
and call the hook with prefetch or with fhirServer reads.
  jcv        "JC virus antibody index (Tysabri monitoring)", positive: never an antibody or a level
  ada        LOINC 58012-6 negative: the one antibody result
  csf        natalizumab 0.2 ug/mL in CSF: unusable, code "specimen"
  comma      valueString "12,500 ng/mL": 12.5 ug/mL
  conflict   28, unit "ug/mL", UCUM code "ng/mL": unusable, code "unit-conflict"
  nd         "Not detected", referenceRange high 0.5 ug/mL: "<0.5", qualitative
  same-a/-b  9 and 0.9 ug/mL at the same time: both kept
  order      natalizumab MedicationRequest authored 3 years ago: a request, never a dose
  given      MedicationAdministration completed 20 days ago, date only, 300 mg: the one dose
  not-given  MedicationAdministration not-done 2 days ago: no dose
  plex       Procedure with performedPeriod start and end
  preg       pregnancy status LA15173-0 "Pregnant"
  weight     body weight 110 [lb_av]
  the Patient's birthDate "2009" (read as 2009-12-31: under 18)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
LAB = "http://example.org/fhir/CodeSystem/local-lab"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PID = "safety-inputs"


def _obs(
    now: datetime, oid: str, days: float, code: dict[str, Any], category: str = "laboratory", **value: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"{PID}-{oid}",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": code,
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **value,
    }


NTZ = {"coding": [{"system": LAB, "code": "NTZ-LVL", "display": "Natalizumab serum concentration"}]}
TYSABRI = {
    "coding": [{"system": RXNORM, "code": "354770", "display": "natalizumab"}],
    "text": "Tysabri 300 mg IV",
}


def records(now: datetime) -> list[dict[str, Any]]:
    def at(days: float) -> str:
        return (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")

    subject = {"reference": f"Patient/{PID}"}
    return [
        {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "2009"},
        # item 2: a JC virus index that names Tysabri; an explicit anti-drug antibody result
        _obs(now, "jcv", 9, {"text": "JC virus antibody index (Tysabri monitoring)"}, valueString="positive"),
        _obs(
            now,
            "ada",
            8,
            {"coding": [{"system": LOINC, "code": "58012-6"}], "text": "Natalizumab Antibodies"},
            valueString="negative",
        ),
        # item 4: a CSF result
        _obs(
            now,
            "csf",
            7,
            {"text": "Natalizumab, CSF"},
            valueQuantity={"value": 0.2, "unit": "ug/mL", "system": UCUM, "code": "ug/mL"},
        ),
        # item 5: grouping comma, unit conflict
        _obs(now, "comma", 6, NTZ, valueString="12,500 ng/mL"),
        _obs(
            now,
            "conflict",
            5.5,
            NTZ,
            valueQuantity={"value": 28, "unit": "ug/mL", "system": UCUM, "code": "ng/mL"},
        ),
        # item 6: not detected with a referenceRange
        _obs(
            now,
            "nd",
            1,
            NTZ,
            valueString="Not detected",
            referenceRange=[{"high": {"value": 0.5, "unit": "ug/mL", "system": UCUM, "code": "ug/mL"}}],
        ),
        # item 14 (input): two results at one time
        _obs(
            now,
            "same-a",
            3,
            NTZ,
            valueQuantity={"value": 9, "unit": "ug/mL", "system": UCUM, "code": "ug/mL"},
        ),
        {
            **_obs(
                now,
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
            "effectiveDateTime": (now - timedelta(days=20)).date().isoformat(),  # item 8: day only
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
            now,
            "preg",
            2,
            {"coding": [{"system": LOINC, "code": "82810-3", "display": "Pregnancy status"}]},
            "social-history",
            valueCodeableConcept={"coding": [{"system": LOINC, "code": "LA15173-0", "display": "Pregnant"}]},
        ),
        _obs(
            now,
            "weight",
            2.5,
            {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
            "vital-signs",
            valueQuantity={"value": 110, "unit": "lbs", "system": UCUM, "code": "[lb_av]"},
        ),
    ]
