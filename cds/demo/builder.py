"""The demo patient builder: FHIR R4 resources for one synthetic patient, every date an offset from `now`.

`PatientBuilder(pid, now)` collects resources through one method per clinical fact (`level`,
`plex_done`, `natalizumab`, ...), each taking days before `now`; the scenario catalogue
(cds/demo/scenarios.py) and the benchmark's realistic patient (bench/bodies.py) call it. Ids are
deterministic: `<patient id>-<kind>-<n>`. No real person: names are invented, identifiers use example.org.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cds.engine.drugs import RXNORM_INGREDIENTS

CAT_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
UCUM = "http://unitsofmeasure.org"
LOCAL_LAB = "http://example.org/fhir/CodeSystem/local-lab"
NTZ_LEVEL_CODE = f"{LOCAL_LAB}|NTZ-LVL"
MRN_SYSTEM = "http://example.org/fhir/NamingSystem/demo-mrn"

# ingredient -> (RxNorm code, display); codes.md §4, from the engine's one table (cds.engine.drugs)
_RXCUI_OF = {name: code for code, name in RXNORM_INGREDIENTS.items()}
RX = {
    name: (_RXCUI_OF[name], name)
    for name in ("natalizumab", "fingolimod", "dimethyl fumarate", "glatiramer acetate")
}
NATALIZUMAB_TEXT = "Tysabri 300 mg IV every 4 weeks"

# SNOMED body sites (codes.md §2); the pons has no verified code, so it is text on the brain stem code
FRONTAL = ("83251001", "Frontal lobe structure (body structure)")
PARIETAL = ("16630005", "Parietal lobe structure (body structure)")
OCCIPITAL = ("31065004", "Occipital lobe structure (body structure)")
BRAINSTEM = ("15926001", "Brain stem structure")
CEREBELLUM = ("113305005", "Cerebellar structure")


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PatientBuilder:
    """Collects one patient's resources; every time argument is days before `now` (may be fractional)."""

    def __init__(self, pid: str, now: datetime) -> None:
        self.pid = pid
        self.now = now
        self.resources: list[dict[str, Any]] = []
        self.draft_order: dict[str, Any] = {}
        self._n: dict[str, int] = {}

    # ------------------------------------------------------------ helpers
    def at(self, days: float) -> str:
        return _iso(self.now - timedelta(days=days))

    def _id(self, kind: str) -> str:
        self._n[kind] = self._n.get(kind, 0) + 1
        return f"{self.pid}-{kind}-{self._n[kind]}"

    @property
    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}

    def _add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.resources.append(resource)
        return resource

    # ------------------------------------------------------------ resources
    def patient(self, given: str, family: str, gender: str, age_years: int) -> None:
        birth = (self.now - timedelta(days=round(age_years * 365.25) + 40)).date().isoformat()
        self._add(
            {
                "resourceType": "Patient",
                "id": self.pid,
                "meta": {"tag": [{"system": "http://example.org/fhir/CodeSystem/demo", "code": "synthetic"}]},
                "identifier": [{"system": MRN_SYSTEM, "value": self.pid.upper()}],
                "active": True,
                "name": [
                    {"use": "official", "family": family, "given": [given], "text": f"{given} {family}"}
                ],
                "gender": gender,
                "birthDate": birth,
            }
        )

    def condition(
        self,
        code: tuple[str, str],
        text: str,
        onset_days: float,
        *,
        sites: list[tuple[tuple[str, str], str]] | None = None,
        note: str | None = None,
        system: str = SCT,
    ) -> None:
        res: dict[str, Any] = {
            "resourceType": "Condition",
            "id": self._id("cond"),
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
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                            "code": "problem-list-item",
                            "display": "Problem List Item",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": system, "code": code[0], "display": code[1]}], "text": text},
            "subject": self.subject,
            "onsetDateTime": self.at(onset_days),
            "recordedDate": self.at(onset_days),
        }
        if sites:
            res["bodySite"] = [
                {"coding": [{"system": SCT, "code": c[0], "display": c[1]}], "text": t} for c, t in sites
            ]
        if note:
            res["note"] = [{"text": note}]
        self._add(res)

    def ms(self, years: float = 9) -> None:
        self.condition(
            ("24700007", "Multiple sclerosis (disorder)"),
            "Relapsing-remitting multiple sclerosis",
            years * 365.25,
        )

    def pml(self, days: float, sites: list[tuple[tuple[str, str], str]], note: str) -> None:
        self.condition(
            ("22255007", "Progressive multifocal leukoencephalopathy"),
            "Natalizumab-associated progressive multifocal leukoencephalopathy (PML)",
            days,
            sites=sites,
            note=note,
        )

    def _lab(self, kind: str, days: float, code: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
        res = {
            "resourceType": "Observation",
            "id": self._id(kind),
            "status": "final",
            "category": [{"coding": [{"system": CAT_SYSTEM, "code": "laboratory", "display": "Laboratory"}]}],
            "code": code,
            "subject": self.subject,
            "effectiveDateTime": self.at(days),
            "issued": self.at(days - 0.25) if days >= 0.25 else self.at(0),
            **value,
        }
        return self._add(res)

    def level(
        self,
        days: float,
        value: float,
        unit: str = "ug/mL",
        *,
        comparator: str | None = None,
        note: str | None = None,
    ) -> None:
        ucum = {"ug/mL": "ug/mL", "ng/mL": "ng/mL", "mg/L": "mg/L", "IU/mL": "[IU]/mL"}[unit]
        q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": ucum}
        if comparator:
            q = {"value": value, "comparator": comparator, "unit": unit, "system": UCUM, "code": ucum}
        res = self._lab(
            "ntz",
            days,
            {
                "coding": [
                    {"system": LOCAL_LAB, "code": "NTZ-LVL", "display": "Natalizumab serum concentration"}
                ],
                "text": "Natalizumab [Mass/volume] in Serum",
            },
            {"valueQuantity": q},
        )
        if note:
            res["note"] = [{"text": note}]

    def _status(
        self, kind: str, days: float, category: str, code: tuple[str, str], value: dict[str, Any]
    ) -> None:
        self._add(
            {
                "resourceType": "Observation",
                "id": self._id(kind),
                "status": "final",
                "category": [{"coding": [{"system": CAT_SYSTEM, "code": category}]}],
                "code": {"coding": [{"system": LOINC, "code": code[0], "display": code[1]}], "text": code[1]},
                "subject": self.subject,
                "effectiveDateTime": self.at(days),
                **value,
            }
        )

    def weight(self, days: float, kg: float) -> None:
        """Body weight, LOINC 29463-7 (cited in cds/fhir/terms.py)."""
        quantity = {"value": kg, "unit": "kg", "system": UCUM, "code": "kg"}
        self._status("wt", days, "vital-signs", ("29463-7", "Body weight"), {"valueQuantity": quantity})

    def pregnancy_status(self, days: float, pregnant: bool) -> None:
        """Pregnancy status, LOINC 82810-3, answered with LOINC LA15173-0 / LA26683-5 (cds/fhir/terms.py)."""
        answer = ("LA15173-0", "Pregnant") if pregnant else ("LA26683-5", "Not pregnant")
        concept = {"coding": [{"system": LOINC, "code": answer[0], "display": answer[1]}], "text": answer[1]}
        self._status(
            "preg", days, "social-history", ("82810-3", "Pregnancy status"), {"valueCodeableConcept": concept}
        )

    def lymphocytes(self, days: float, value: float, unit: str = "10*9/L") -> None:
        self._lab(
            "lym",
            days,
            {
                "coding": [
                    {
                        "system": LOINC,
                        "code": "731-0",
                        "display": "Lymphocytes [#/volume] in Blood by Automated count",
                    }
                ],
                "text": "Lymphocytes, absolute",
            },
            {
                "valueQuantity": {
                    "value": value,
                    "unit": unit.replace("10*", "10^"),
                    "system": UCUM,
                    "code": unit,
                }
            },
        )

    def antibodies(self, days: float, positive: bool) -> None:
        answer = ("10828004", "Positive") if positive else ("260385009", "Negative")
        interp = ("POS", "Positive") if positive else ("NEG", "Negative")
        self._lab(
            "ada",
            days,
            {
                "coding": [{"system": LOINC, "code": "58012-6", "display": "Natalizumab Antibodies"}],
                "text": "Anti-natalizumab antibodies",
            },
            {
                "valueCodeableConcept": {
                    "coding": [{"system": SCT, "code": answer[0], "display": answer[1]}],
                    "text": answer[1],
                },
                "interpretation": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                "code": interp[0],
                                "display": interp[1],
                            }
                        ]
                    }
                ],
            },
        )

    def _med(self, ingredient: str, text: str) -> dict[str, Any]:
        concept: dict[str, Any] = {"text": text}
        if ingredient in RX:
            code, display = RX[ingredient]
            concept = {"coding": [{"system": RXNORM, "code": code, "display": display}], "text": text}
        return concept

    def natalizumab(
        self, last_dose_days: float, *, start_days: float = 3 * 365.25, stopped: bool = True
    ) -> None:
        """Natalizumab q4w since `start_days`, last infusion `last_dose_days` ago.

        The infusions are MedicationAdministration records (the last three, 28 days apart: what gives
        the dose dates); the statement says the course and its end, and the standing order written at
        the start is a MedicationRequest whose authoredOn is never a dose date."""
        timing = {"repeat": {"frequency": 1, "period": 4, "periodUnit": "wk"}}
        dose = [{"doseQuantity": {"value": 300, "unit": "mg", "system": UCUM, "code": "mg"}}]
        route = {
            "coding": [{"system": SCT, "code": "47625008", "display": "Intravenous route"}],
            "text": "IV",
        }
        period: dict[str, str] = {"start": self.at(start_days)}
        if stopped:
            period["end"] = self.at(last_dose_days)
        stmt: dict[str, Any] = {
            "resourceType": "MedicationStatement",
            "id": self._id("ms"),
            "status": "stopped" if stopped else "active",
            "medicationCodeableConcept": self._med("natalizumab", NATALIZUMAB_TEXT),
            "subject": self.subject,
            "effectivePeriod": period,
            "dateAsserted": self.at(max(last_dose_days - 1, 0)),
            "dosage": [
                {
                    "text": "300 mg IV every 4 weeks; last infusion " + self.at(last_dose_days)[:10],
                    "timing": timing,
                    "route": route,
                    "doseAndRate": dose,
                }
            ],
        }
        if stopped:
            stmt["statusReason"] = [{"text": "Stopped: progressive multifocal leukoencephalopathy"}]
        self._add(stmt)
        self._add(
            {
                "resourceType": "MedicationRequest",
                "id": self._id("mr"),
                "status": "stopped" if stopped else "active",
                "intent": "order",
                "medicationCodeableConcept": self._med("natalizumab", NATALIZUMAB_TEXT),
                "subject": self.subject,
                "authoredOn": self.at(start_days),
                "dosageInstruction": [
                    {"text": "300 mg IV every 4 weeks", "timing": timing, "route": route, "doseAndRate": dose}
                ],
            }
        )
        for days in (last_dose_days + 56, last_dose_days + 28, last_dose_days):
            self._add(
                {
                    "resourceType": "MedicationAdministration",
                    "id": self._id("ma"),
                    "status": "completed",
                    "medicationCodeableConcept": self._med("natalizumab", NATALIZUMAB_TEXT),
                    "subject": self.subject,
                    "effectivePeriod": {"start": self.at(days + 1 / 24), "end": self.at(days)},
                    "dosage": {
                        "text": "300 mg IV over 1 hour",
                        "route": route,
                        "dose": {"value": 300, "unit": "mg", "system": UCUM, "code": "mg"},
                    },
                }
            )

    def statement(self, ingredient: str, text: str, start_days: float, status: str = "active") -> None:
        self._add(
            {
                "resourceType": "MedicationStatement",
                "id": self._id("ms"),
                "status": status,
                "medicationCodeableConcept": self._med(ingredient, text),
                "subject": self.subject,
                "effectivePeriod": {"start": self.at(start_days)},
                "dateAsserted": self.at(max(start_days - 1, 0)),
                "dosage": [{"text": text}],
            }
        )

    def request(
        self,
        ingredient: str,
        text: str,
        days: float,
        *,
        status: str = "active",
        intent: str = "order",
        note: str | None = None,
    ) -> None:
        res: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": self._id("mr"),
            "status": status,
            "intent": intent,
            "medicationCodeableConcept": self._med(ingredient, text),
            "subject": self.subject,
            "authoredOn": self.at(days),
            "dosageInstruction": [{"text": text}],
        }
        if note:
            res["note"] = [{"text": note}]
        self._add(res)

    def plex_done(self, *days: float) -> None:
        """Completed PLEX sessions, 1.5 plasma volumes each."""
        for d in sorted(days, reverse=True):
            self._add(
                {
                    "resourceType": "Procedure",
                    "id": self._id("plex"),
                    "status": "completed",
                    "category": {
                        "coding": [
                            {
                                "system": SCT,
                                "code": "277132007",
                                "display": "Therapeutic procedure (procedure)",
                            }
                        ]
                    },
                    "code": {
                        "coding": [
                            {
                                "system": CPT,
                                "code": "36514",
                                "display": "Therapeutic apheresis; for plasma pheresis",
                            }
                        ],
                        "text": "Therapeutic plasma exchange",
                    },
                    "subject": self.subject,
                    "performedPeriod": {"start": self.at(d), "end": self.at(d - 2 / 24)},
                    "note": [{"text": "1.5 plasma volumes exchanged, 5% albumin replacement"}],
                }
            )

    def order(self, code: dict[str, Any], **extra: Any) -> None:
        """The unsigned ServiceRequest for `code` (the hook's draft order); `extra` adds its elements."""
        self.draft_order = {
            "resourceType": "ServiceRequest",
            "id": f"{self.pid}-order-1",
            "status": "draft",
            "intent": "order",
            "code": code,
            "subject": self.subject,
            "authoredOn": self.at(0),
            "requester": {"reference": "Practitioner/demo-neuro", "display": "Demo Neurologist"},
            **extra,
        }

    def plex_order(self, sessions: int | None = 5, reason: str = "Natalizumab washout") -> None:
        """Draft PLEX order: CPT 36514, every other day; `sessions=None` leaves the course length open."""
        repeat: dict[str, Any] = {"frequency": 1, "period": 2, "periodUnit": "d"}
        extra: dict[str, Any] = {}
        if sessions is not None:
            repeat = {"count": sessions, **repeat}
            extra["quantityQuantity"] = {"value": sessions, "unit": "sessions"}
        self.order(
            {
                "coding": [
                    {"system": CPT, "code": "36514", "display": "Therapeutic apheresis; for plasma pheresis"}
                ],
                "text": "Plasma exchange",
            },
            **extra,
            occurrenceTiming={"repeat": repeat},
            reasonCode=[{"text": reason}],
            note=[{"text": "1.5 plasma volumes per session, 5% albumin"}],
        )
