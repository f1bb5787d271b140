"""Synthetic demo patients: FHIR R4 resources with every date kept as an offset from `now`.

Each scenario is a small function that calls a `_Builder` with day offsets (`days` before `now`);
`build(name, now)` materialises it. Ids are deterministic: `<patient id>-<kind>-<n>`, and the
patient id is `demo-<scenario>`. No real person: names are invented, identifiers use example.org.

`expected` says qualitatively what the cards should show. Keys (all optional but `cards`):
  cards               card kinds in order, [] when the service must stay silent
  basis               "measured" | "dosing-history" | "none" (estimate card)
  remaining_estimate  sessions by the reference model of clinical-reference.md §7.1 (r 0.50, range
                      r 0.45-0.60, t½ 11 d, target 1.0 µg/mL); an engine may differ by one
  sessions_completed  completed PLEX procedures on record
  ordered_sessions    what the draft order asks for (quantityQuantity / repeat.count)
  iris_risk           "high" | "standard"
  active_conflicts    lower-case ingredients the DMT card must name as active conflicts
  flags               free words for what the card should mention (e.g. "post-session-sample")
  unusable            how many values the cards must name as not used
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

CAT_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
UCUM = "http://unitsofmeasure.org"
LOCAL_LAB = "http://example.org/fhir/CodeSystem/local-lab"
NTZ_LEVEL_CODE = f"{LOCAL_LAB}|NTZ-LVL"
MRN_SYSTEM = "http://example.org/fhir/NamingSystem/demo-mrn"

# ingredient -> (RxNorm code, display); codes.md §4
RX = {
    "natalizumab": ("354770", "natalizumab"),
    "fingolimod": ("1012892", "fingolimod"),
    "dimethyl fumarate": ("1373478", "dimethyl fumarate"),
    "glatiramer acetate": ("214582", "glatiramer acetate"),
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


class _Builder:
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

    def _order(self, code: dict[str, Any], **extra: Any) -> None:
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
        self._order(
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


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class _Scenario:
    title: str
    description: str
    expected: dict[str, Any]
    build: Callable[[_Builder], None]


_ALL3 = ["plex-estimate", "iris", "dmt"]
_FRONTAL_NOTE = "Right frontal subcortical T2/FLAIR lesion, unilobar; no gadolinium enhancement"


def _common(b: _Builder, *, lymph: float = 1.8, ada_negative: bool = True) -> None:
    b.ms()
    if lymph:
        b.lymphocytes(21, lymph)
    if ada_negative:
        b.antibodies(30, positive=False)


def _high(b: _Builder) -> None:
    b.patient("Ilse", "Marwood", "female", 38)
    _common(b)
    b.pml(4, [(FRONTAL, "Right frontal lobe")], _FRONTAL_NOTE)
    b.natalizumab(12)
    b.level(1, 28)
    b.plex_order(5)


def _decayed(b: _Builder) -> None:
    b.patient("Tomas", "Erlenbach", "male", 44)
    _common(b)
    b.pml(
        22, [(PARIETAL, "Left parietal lobe")], "Left parietal subcortical lesion, unilobar; no enhancement"
    )
    b.natalizumab(35)
    b.level(20, 20)
    b.plex_order(None)


def _post_session(b: _Builder) -> None:
    b.patient("Rosalind", "Okafor-Dunne", "female", 31)
    _common(b)
    b.pml(6, [(FRONTAL, "Left frontal lobe")], "Left frontal lesion, unilobar; no gadolinium enhancement")
    b.natalizumab(14)
    b.level(3, 25, note="Drawn before the first plasma exchange")
    b.plex_done(1.1)
    b.level(1.1 - 2 / 24 - 0.25, 7.5, note="Drawn 6 hours after plasma exchange session 1")
    b.plex_order(4)


def _mid_course(b: _Builder) -> None:
    b.patient("Henrik", "Salvesen", "male", 49)
    _common(b)
    b.pml(10, [(OCCIPITAL, "Right occipital lobe")], "Right occipital lesion, unilobar; no enhancement")
    b.natalizumab(18)
    b.weight(7.3, 82.0)
    b.level(7.1, 32, "mg/L", note="Pre-session 1")
    b.plex_done(7, 5, 3)
    b.level(1, 4.8, "mg/L", note="Pre-session 4, 2 days after session 3")
    b.plex_order(3)


def _below_target(b: _Builder) -> None:
    b.patient("Agnes", "Villanueva", "female", 52)
    _common(b)
    b.pml(16, [(FRONTAL, "Right frontal lobe")], _FRONTAL_NOTE)
    b.natalizumab(24)
    b.level(13, 27)
    b.plex_done(12, 10, 8, 6, 4)
    b.level(2, 0.5, comparator="<", note="Below the lower limit of quantification (0.5 ug/mL)")
    b.plex_order(2)


def _antibodies(b: _Builder) -> None:
    b.patient("Colm", "Brannigan", "male", 41)
    _common(b, ada_negative=False)
    b.pml(8, [(PARIETAL, "Right parietal lobe")], "Right parietal lesion, unilobar; no enhancement")
    b.natalizumab(40)
    b.antibodies(65, positive=True)
    b.antibodies(15, positive=True)
    b.level(5, 0.4)
    b.plex_order(5)


def _no_level(b: _Builder) -> None:
    b.patient("Perpetua", "Lindgren", "female", 35)
    _common(b)
    b.pml(3, [(FRONTAL, "Left frontal lobe")], "Left frontal lesion, unilobar; no gadolinium enhancement")
    b.natalizumab(10)
    b.plex_order(5)


def _brainstem(b: _Builder) -> None:
    b.patient("Osric", "Feldmann", "male", 46)
    _common(b)
    b.pml(
        5,
        [(BRAINSTEM, "Pons (brainstem)"), (CEREBELLUM, "Left middle cerebellar peduncle")],
        "Lesion of the left middle cerebellar peduncle extending into the pons (brainstem); "
        "patchy gadolinium contrast enhancement at diagnosis",
    )
    b.natalizumab(16)
    b.level(2, 21000, "ng/mL")
    b.plex_order(5)


def _fingolimod(b: _Builder) -> None:
    b.patient("Wilhelmina", "Achterberg", "female", 29)
    b.ms()
    b.lymphocytes(21, 1.6, "10*3/uL")
    b.antibodies(30, positive=False)
    b.pml(7, [(FRONTAL, "Right frontal lobe")], _FRONTAL_NOTE)
    b.natalizumab(30)
    b.statement("fingolimod", "Gilenya (fingolimod) 0.5 mg orally once daily", 6)
    b.weight(6.3, 64.5)
    b.pregnancy_status(6.2, pregnant=False)
    b.request("fingolimod", "Gilenya (fingolimod) 0.5 mg orally once daily", 6)
    b.level(1, 22)
    b.plex_order(5)


def _lymphopenia(b: _Builder) -> None:
    b.patient("Bartholomew", "Quist", "male", 55)
    _common(b, lymph=0)
    b.lymphocytes(45, 0.45)
    b.lymphocytes(3, 0.4)
    b.pml(9, [(PARIETAL, "Left parietal lobe")], "Left parietal lesion, unilobar; no enhancement")
    b.natalizumab(20)
    b.request(
        "dimethyl fumarate",
        "Tecfidera (dimethyl fumarate) 240 mg orally twice daily",
        2,
        status="draft",
        intent="proposal",
        note="Considered as the next DMT after plasma exchange",
    )
    b.level(2, 16)
    b.plex_order(5)


def _implausible(b: _Builder) -> None:
    b.patient("Genevieve", "Thornquist", "female", 47)
    _common(b)
    b.pml(6, [(FRONTAL, "Right frontal lobe")], _FRONTAL_NOTE)
    b.natalizumab(15)
    b.level(3, 5000, note="Result as transmitted by the reference laboratory")
    b.level(2.2, 12, "IU/mL")
    b.level(2, 15)
    b.plex_order(5)


def _mri_order(b: _Builder) -> None:
    b.patient("Lorcan", "Heathcote", "male", 40)
    _common(b)
    b.pml(4, [(FRONTAL, "Right frontal lobe")], _FRONTAL_NOTE)
    b.natalizumab(12)
    b.level(1, 26)
    b._order(
        {
            "coding": [{"system": LOINC, "code": "24590-2", "display": "MR Brain WO and W contrast IV"}],
            "text": "MRI brain with and without gadolinium",
        },
        category=[{"coding": [{"system": SCT, "code": "363679005", "display": "Imaging"}]}],
    )


def _no_natalizumab(b: _Builder) -> None:
    b.patient("Mirela", "Castellanos", "female", 63)
    b.condition(("91637004", "Myasthenia gravis (disorder)"), "Generalised myasthenia gravis", 4 * 365.25)
    b.lymphocytes(10, 1.7)
    b.statement("pyridostigmine", "Pyridostigmine 60 mg orally four times daily", 3 * 365.25)
    b.plex_order(5, reason="Myasthenic exacerbation")


def _course_short(b: _Builder) -> None:
    b.patient("Ezekiel", "Morcombe", "male", 37)
    _common(b)
    b.pml(3, [(OCCIPITAL, "Left occipital lobe")], "Left occipital lesion, unilobar; no enhancement")
    b.natalizumab(11)
    b.level(1, 30)
    b.plex_order(2)


_SCENARIOS: dict[str, _Scenario] = {
    "high-level": _Scenario(
        "High natalizumab level",
        "28 µg/mL drawn yesterday, no PLEX yet; 5 sessions ordered",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 5,
            "sessions_completed": 0,
            "ordered_sessions": 5,
            "iris_risk": "standard",
            "active_conflicts": [],
        },
        _high,
    ),
    "decayed-level": _Scenario(
        "Decayed level",
        "20 µg/mL drawn 20 days ago, no PLEX since; course length left open",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 3,
            "sessions_completed": 0,
            "iris_risk": "standard",
            "flags": ["decayed"],
        },
        _decayed,
    ),
    "post-session": _Scenario(
        "Post-session sample",
        "7.5 µg/mL drawn 6 h after session 1 (25 µg/mL before it)",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 4,
            "sessions_completed": 1,
            "ordered_sessions": 4,
            "iris_risk": "standard",
            "flags": ["post-session-sample", "remeasure"],
        },
        _post_session,
    ),
    "mid-course": _Scenario(
        "Mid-course, fitted removal",
        "32 → 4.8 mg/L across 3 sessions: removal fitted to this patient",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 3,
            "sessions_completed": 3,
            "ordered_sessions": 3,
            "iris_risk": "standard",
            "fitted_removal_fraction": 0.53,
            "flags": ["fitted"],
        },
        _mid_course,
    ),
    "below-target": _Scenario(
        "Below target",
        "<0.5 µg/mL after 5 sessions; 2 more ordered",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 0,
            "sessions_completed": 5,
            "ordered_sessions": 2,
            "iris_risk": "standard",
            "comparator": "<",
        },
        _below_target,
    ),
    "antibodies": _Scenario(
        "Anti-natalizumab antibodies",
        "Persistently positive antibodies 50 days apart; level 0.4 µg/mL",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 0,
            "iris_risk": "standard",
            "flags": ["antibodies-persistent"],
        },
        _antibodies,
    ),
    "no-level": _Scenario(
        "No level on record",
        "Only dosing history: last Tysabri infusion 10 days ago",
        {
            "cards": _ALL3,
            "basis": "dosing-history",
            "iris_risk": "standard",
            "sessions_completed": 0,
            "flags": ["measure-level"],
        },
        _no_level,
    ),
    "brainstem-pml": _Scenario(
        "Brainstem PML",
        "Pontine lesion with contrast enhancement; level 21000 ng/mL",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 5,
            "iris_risk": "high",
            "iris_reasons": ["brainstem", "enhancement"],
        },
        _brainstem,
    ),
    "active-fingolimod": _Scenario(
        "Active fingolimod",
        "Fingolimod started 6 days ago alongside the natalizumab history",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 5,
            "iris_risk": "standard",
            "active_conflicts": ["fingolimod"],
        },
        _fingolimod,
    ),
    "lymphopenia": _Scenario(
        "Lymphopenia",
        "Lymphocytes 0.4 × 10⁹/L; dimethyl fumarate being considered",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 4,
            "iris_risk": "standard",
            "fumarate_advised": False,
            "lymphocytes": 0.4,
        },
        _lymphopenia,
    ),
    "implausible-values": _Scenario(
        "Implausible values",
        "5000 µg/mL and 12 IU/mL on record beside a valid 15 µg/mL",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 4,
            "iris_risk": "standard",
            "unusable": 2,
        },
        _implausible,
    ),
    "non-plex-order": _Scenario(
        "Non-PLEX order",
        "MRI brain ordered for a natalizumab-PML patient: the service stays silent",
        {"cards": []},
        _mri_order,
    ),
    "no-natalizumab": _Scenario(
        "PLEX without natalizumab",
        "Plasma exchange for myasthenia gravis: no natalizumab exposure",
        {"cards": []},
        _no_natalizumab,
    ),
    "course-short": _Scenario(
        "Ordered course too short",
        "30 µg/mL yesterday but only 2 sessions ordered",
        {
            "cards": _ALL3,
            "basis": "measured",
            "remaining_estimate": 5,
            "ordered_sessions": 2,
            "iris_risk": "standard",
            "suggest_update_sessions": 5,
        },
        _course_short,
    ),
}


def scenario_names() -> list[str]:
    return list(_SCENARIOS)


def build(name: str, now: datetime) -> tuple[str, _Scenario, list[dict[str, Any]], dict[str, Any]]:
    """(patient id, scenario, resources, draft order) for `name`, dates materialised against `now`."""
    try:
        sc = _SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown demo patient {name!r}; known: {', '.join(_SCENARIOS)}") from None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC).replace(microsecond=0)
    pid = f"demo-{name}"
    b = _Builder(pid, now)
    sc.build(b)
    return pid, sc, b.resources, b.draft_order
