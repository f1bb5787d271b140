"""Issue 15 regression scenarios: one small patient per numbered path to a wrong answer, as FHIR R4 JSON.

build(now) -> {name: demo.DemoPatient}: every date relative to `now` (the service reads the real clock,
so build them just before the calls). The names start with the issue's item number. Each patient has
a draft PLEX ServiceRequest (5 sessions, 1.5 plasma volumes every other day) and, unless the scenario
is about it, natalizumab infusions as MedicationAdministration (the last one 40 days before `now`) and
a PML diagnosis in one frontal lobe (no sign that raises the risk of severe IRIS).

prefetch(templates, patient) resolves the service's own prefetch templates over a scenario's resources
in memory (one searchset Bundle per search key, the Patient for a read), so that the prefetch follows
whatever keys cds.fhir_io.prefetch_templates names (medicationAdministrations, patientStatus, ...).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from cds import demo
from tests.safety import records as fhir

FHIR_BASE = "http://ehr.example/fhir"
Resources = list[dict[str, Any]]


def _days(n: float) -> timedelta:
    return timedelta(days=n)


class _Patient:
    """A scenario patient under construction: `add` resources, `done` makes the DemoPatient."""

    def __init__(
        self, name: str, now: datetime, *, infusions: bool = True, pml: bool = True, **patient: Any
    ) -> None:
        self.name, self.now, self.pid = name, now, f"safety-{name}"
        self.last_dose = now - _days(40)
        self.resources: Resources = [fhir.patient(self.pid, **patient)]
        if infusions:
            for i, days_before in enumerate((56, 28, 0)):
                self.add(fhir.infusion, f"ma{i}", self.last_dose - _days(days_before))
        if pml:
            self.add(fhir.pml, "pml", now - _days(30), body_sites=("right frontal lobe",))

    def oid(self, local: str) -> str:
        return f"{self.name}-{local}"

    def add(self, build: Callable[..., dict[str, Any]], local: str, *args: Any, **kwargs: Any) -> None:
        self.resources.append(build(self.oid(local), self.pid, *args, **kwargs))

    def level(self, local: str, when: datetime | str | None, **value: Any) -> None:
        at = fhir.iso(when) if isinstance(when, datetime) else when
        self.add(fhir.serum_level, local, at, **value)

    def done(self, description: str) -> demo.DemoPatient:
        return demo.DemoPatient(
            name=self.name,
            patient_id=self.pid,
            title=self.name,
            description=description,
            resources=self.resources,
            draft_order=fhir.plex_order(self.oid("draft"), self.pid, sessions=5),
        )


def ug(value: float) -> dict[str, Any]:
    """A serum level in µg/mL, unit text and UCUM code agreeing."""
    return {"valueQuantity": fhir.qty(value, "ug/mL")}


def build(now: datetime) -> dict[str, demo.DemoPatient]:
    now = now.replace(second=0, microsecond=0)
    out: list[demo.DemoPatient] = []

    # 1. persistent anti-natalizumab antibodies with a measured level; and with no level
    p = _Patient("item01-level", now)
    p.add(fhir.antibody, "ab1", now - _days(120), True)
    p.add(fhir.antibody, "ab2", now - _days(20), True)
    p.level("ntz", now - _days(3), **ug(12))
    out.append(p.done("persistent anti-natalizumab antibodies and a serum level of 12 µg/mL"))
    p = _Patient("item01-nolevel", now)
    p.add(fhir.antibody, "ab1", now - _days(120), True)
    p.add(fhir.antibody, "ab2", now - _days(20), True)
    out.append(p.done("persistent anti-natalizumab antibodies, no level"))

    # 2. JC virus antibody results with natalizumab/Tysabri in the text
    p = _Patient("item02", now)
    for i, days_ago in enumerate((150, 30)):
        p.add(
            fhir.lab,
            f"jcv-index{i}",
            fhir.JCV_INDEX_CODE,
            fhir.iso(now - _days(days_ago)),
            valueQuantity={"value": 3.1, "unit": "{index}", "system": fhir.UCUM, "code": "{index}"},
            interpretation=[{"text": "Positive"}],
        )
        p.add(
            fhir.lab,
            f"jcv-qual{i}",
            fhir.JCV_QUALITATIVE_CODE,
            fhir.iso(now - _days(days_ago)),
            valueCodeableConcept=fhir.POSITIVE,
        )
    p.level("ntz", now - _days(3), **ug(12))
    out.append(p.done("JCV antibody index positive twice (Tysabri monitoring), serum level 12 µg/mL"))

    # 3. a 3-year-old active standing order and no infusion on record; and infusions beside the order
    p = _Patient("item03-order", now, infusions=False)
    p.add(fhir.standing_order, "mr", fhir.iso(now - _days(3 * 365)))
    out.append(p.done("natalizumab standing order authored 3 years ago, active; no infusion recorded"))
    p = _Patient("item03-given", now, infusions=False)
    p.add(fhir.standing_order, "mr", fhir.iso(now - _days(3 * 365)))
    p.add(fhir.infusion, "ma", now - _days(20))
    out.append(p.done("standing order authored 3 years ago; last infusion given 20 days ago"))

    # 4. a CSF natalizumab result newer than the serum level
    p = _Patient("item04", now)
    p.level("serum", now - _days(5), **ug(12))
    p.add(
        fhir.lab,
        "csf",
        {"text": "Natalizumab concentration, CSF"},
        fhir.iso(now - _days(1)),
        specimen={"display": "Cerebrospinal fluid"},
        valueQuantity=fhir.qty(0.1, "ug/mL"),
    )
    out.append(p.done("serum 12 µg/mL, then CSF 0.1 µg/mL"))

    # 5. numbers: a grouping comma, a unit text against its UCUM code, Mg/L, other scripts
    p = _Patient("item05", now)
    p.level("grouped", now - _days(1), valueString="12,500 ng/mL")
    p.level("conflict", now - _days(2), valueQuantity=fhir.qty(28, "ug/mL", code="ng/mL"))
    p.level("megagram", now - _days(3), valueQuantity=fhir.qty(0.5, "Mg/L"))
    p.level("arabic", now - _days(4), valueString="١٢ ug/mL")
    out.append(p.done("12,500 ng/mL; 28 'ug/mL' coded ng/mL; 0.5 Mg/L; Arabic-Indic digits"))

    # 6. a qualitative "Not detected" newer than a measured level, with the assay's limit stated
    p = _Patient("item06", now)
    p.level("measured", now - _days(10), **ug(12))
    p.level(
        "not-detected",
        now - _days(1),
        valueString="Not detected",
        referenceRange=[{"high": fhir.qty(0.5, "ug/mL"), "text": "<0.5 ug/mL (limit of quantification)"}],
    )
    out.append(p.done("serum 12 µg/mL 10 days ago, then 'Not detected' (limit 0.5 µg/mL) yesterday"))

    # 7. a level drawn 3 hours after a 2.5-plasma-volume session
    p = _Patient("item07", now)
    session_at = now - _days(1)
    p.add(
        fhir.plex_session,
        "plex",
        session_at,
        note="2.5 plasma volumes exchanged, albumin 5%",
        performedPeriod={"start": fhir.iso(session_at), "end": fhir.iso(session_at + timedelta(hours=2))},
    )
    del p.resources[-1]["performedDateTime"]
    p.level("post", session_at + timedelta(hours=5), **ug(2))
    out.append(p.done("2 µg/mL drawn 3 h after a 2.5 PV session"))

    # 8. a date-only level on the day of a session
    p = _Patient("item08", now)
    session_at = (now - _days(3)).replace(hour=9, minute=0)
    p.add(fhir.plex_session, "plex", session_at)
    p.level("date-only", fhir.day(session_at), **ug(6))
    out.append(p.done("6 µg/mL dated to the day of a PLEX session only"))

    # 9. an old pre-course level beside two drawn within the course
    p = _Patient("item09", now, infusions=False)
    for i, days_ago in enumerate((126, 98, 70)):
        p.add(fhir.infusion, f"ma{i}", now - _days(days_ago))
    p.level("old", now - _days(40), **ug(30))
    p.level("pre", now - _days(7), **ug(10))
    for i, days_ago in enumerate((6, 4, 2)):
        p.add(fhir.plex_session, f"plex{i}", now - _days(days_ago), note="1.5 plasma volumes exchanged")
    p.level("after", now - _days(1), **ug(1.5))
    out.append(p.done("30 µg/mL 34 days before the course, 10 before session 1, 1.5 after session 3"))

    # 10. half-life uncertainty: an old level; and a dosing-history projection 28 days after an infusion
    p = _Patient("item10-old", now, infusions=False)
    for i, days_ago in enumerate((106, 78, 50)):
        p.add(fhir.infusion, f"ma{i}", now - _days(days_ago))
    p.level("old", now - _days(30), **ug(20))
    out.append(p.done("one level of 20 µg/mL drawn 30 days ago"))
    p = _Patient("item10-history", now, infusions=False)
    for i in range(13):  # a year of infusions every 4 weeks, the last 28 days ago
        p.add(fhir.infusion, f"ma{i}", now - _days(28 * (13 - i)))
    out.append(p.done("infusions every 4 weeks for a year, the last 28 days ago; no level"))

    # 11. a lymphocyte count drawn on natalizumab, before the last infusion
    p = _Patient("item11", now)
    p.level("ntz", now - _days(3), **ug(12))
    p.add(
        fhir.lab,
        "lym",
        {
            "coding": [
                {
                    "system": fhir.LOINC,
                    "code": "731-0",
                    "display": "Lymphocytes [#/volume] in Blood by Automated count",
                }
            ]
        },
        fhir.iso(now - _days(100)),
        valueQuantity=fhir.qty(2.4, "10*3/uL"),
    )
    out.append(p.done("lymphocytes 2.4 × 10⁹/L drawn 100 days ago, on natalizumab"))

    # 12. multilobar PML (not widespread); and IRIS already on record
    p = _Patient("item12-multilobar", now, pml=False)
    p.add(
        fhir.pml,
        "pml",
        now - _days(30),
        body_sites=("left frontal lobe", "left parietal lobe"),
        stage="multilobar",
    )
    p.level("ntz", now - _days(3), **ug(12))
    out.append(p.done("multilobar PML (frontal and parietal), no enhancement, no brainstem"))
    p = _Patient("item12-iris", now)
    p.add(fhir.condition, "iris", fhir.IRIS_CODE, now - _days(5))
    p.level("ntz", now - _days(3), **ug(12))
    out.append(p.done("PML-IRIS already diagnosed"))

    # 13. steroid evidence labels (any PML patient)
    p = _Patient("item13", now)
    p.level("ntz", now - _days(3), **ug(12))
    out.append(p.done("unilobar PML, level 12 µg/mL: the steroid statements"))

    # 14. far above label Cmax; implausibly low for the unit; same-time discordant results
    p = _Patient("item14-high", now)
    p.level("ntz", now - _days(2), **ug(600))
    out.append(p.done("600 µg/mL, far above the label Cmax of 110 ± 52"))
    p = _Patient("item14-low-unit", now)
    p.level("ntz", now - _days(5), **ug(12))
    p.level("ng", now - _days(1), valueQuantity=fhir.qty(25, "ng/mL"))
    out.append(p.done("12 µg/mL, then 25 'ng/mL' (a unit slip for 25 µg/mL?)"))
    p = _Patient("item14-same-time", now)
    same = now - _days(2)
    p.level("high", same, **ug(12))
    p.level("low", same, **ug(0.3))
    out.append(p.done("12 and 0.3 µg/mL reported for the same time"))

    # 15. pregnant; breastfeeding; under 18 (and light)
    p = _Patient("item15-pregnant", now)
    p.level("ntz", now - _days(3), **ug(12))
    p.add(
        fhir.status_observation,
        "preg",
        fhir.PREGNANCY_STATUS_CODE,
        now - _days(10),
        "social-history",
        valueCodeableConcept=fhir.PREGNANT,
    )
    out.append(p.done("pregnant"))
    p = _Patient("item15-breastfeeding", now)
    p.level("ntz", now - _days(3), **ug(12))
    p.add(
        fhir.status_observation,
        "bf",
        fhir.BREASTFEEDING_STATUS_CODE,
        now - _days(10),
        "social-history",
        valueCodeableConcept=fhir.BREASTFEEDING,
    )
    out.append(p.done("breastfeeding"))
    p = _Patient("item15-minor", now, birth_date=fhir.day(now - _days(16 * 365)))
    p.level("ntz", now - _days(3), **ug(12))
    p.add(
        fhir.status_observation,
        "wt",
        fhir.BODY_WEIGHT_CODE,
        now - _days(10),
        "vital-signs",
        valueQuantity=fhir.qty(41, "kg"),
    )
    out.append(p.done("16 years old, 41 kg"))

    # 16. MRI text: enhancement not assessed; old MS plaques in the pons
    p = _Patient("item16", now, pml=False)
    p.add(
        fhir.pml,
        "pml",
        now - _days(30),
        body_sites=("right frontal lobe",),
        notes=(
            "MRI: right frontal PML lesion; enhancement not assessed (no contrast given).",
            "Old MS plaques in the pons, unchanged since 2019.",
        ),
    )
    p.level("ntz", now - _days(3), **ug(12))
    out.append(p.done("MRI text: 'enhancement not assessed', old MS plaques in the pons"))

    return {p.name: p for p in out}


# ---------------------------------------------------------------- prefetch, from the service's own templates


def _codings(value: Any) -> list[dict[str, Any]]:
    concepts = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return [c for cc in concepts for c in cc.get("coding", [])]


def _token_match(codings: list[dict[str, Any]], tokens: str) -> bool:
    for token in tokens.split(","):
        system, sep, code = token.rpartition("|")
        for c in codings:
            if c.get("code") == code and (not sep or not system or c.get("system") == system):
                return True
    return False


_CODE_ELEMENT = {
    "MedicationStatement": "medicationCodeableConcept",
    "MedicationRequest": "medicationCodeableConcept",
    "MedicationAdministration": "medicationCodeableConcept",
}


def _search(rtype: str, query: str, resources: Resources, pid: str) -> dict[str, Any]:
    """A searchset Bundle of every match. Filters on patient/subject, code, category and status;
    other parameters (_sort, _count, date, _include, ...) only order, page or widen a real server's
    answer, and the service filters by date itself, so they are not applied here."""
    found = [r for r in resources if r["resourceType"] == rtype and r.get("subject") == fhir.subject(pid)]
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "code":
            element = _CODE_ELEMENT.get(rtype, "code")
            found = [r for r in found if _token_match(_codings(r.get(element)), value)]
        elif key == "category":
            found = [r for r in found if _token_match(_codings(r.get("category")), value)]
        elif key == "status":
            found = [r for r in found if r.get("status") in value.split(",")]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(found)}
    if found:
        bundle["entry"] = [
            {
                "fullUrl": f"{FHIR_BASE}/{rtype}/{r['id']}",
                "resource": copy.deepcopy(r),
                "search": {"mode": "match"},
            }
            for r in found
        ]
    return bundle


def prefetch(templates: dict[str, str], p: demo.DemoPatient) -> dict[str, Any]:
    """Every key of `templates` filled from `p.resources` as an EHR would fill it."""
    out: dict[str, Any] = {}
    for key, template in templates.items():
        url = template.replace("{{context.patientId}}", p.patient_id)
        assert "{{" not in url, f"prefetch {key}: a token the scenarios cannot fill: {template}"
        path, sep, query = url.partition("?")
        if sep:
            out[key] = _search(path, query, p.resources, p.patient_id)
        else:
            rtype, _, rid = path.partition("/")
            match = [r for r in p.resources if r["resourceType"] == rtype and r["id"] == rid]
            if match:
                out[key] = copy.deepcopy(match[0])
    return out
