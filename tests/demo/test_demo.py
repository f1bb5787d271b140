"""The embedded demo patients: every scenario builds, is valid FHIR R4, and prefetches what it should."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cds import demo
from cds.demo.builder import NTZ_LEVEL_CODE
from cds.fhir_io import prefetch_templates
from cds.settings import Settings
from tests.demo.scenarios import REQUIRED

NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
NAMES = demo.scenarios()
TEMPLATES = prefetch_templates(Settings(auth="off"))


def _when(s: str) -> datetime:
    return datetime.fromisoformat(s)


def _ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_scenario_names_are_stable_and_cover_the_issue() -> None:
    assert len(NAMES) >= 12
    assert len(set(NAMES)) == len(NAMES)
    for must in REQUIRED:
        assert must in NAMES


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="high-level"):
        demo.patient("nope", NOW)


@pytest.mark.parametrize("name", NAMES)
def test_every_scenario_builds_with_deterministic_ids(name: str) -> None:
    p = demo.patient(name, NOW)
    again = demo.patient(name, NOW)
    assert p == again
    assert p.name == name and p.patient_id == f"demo-{name}"
    assert p.title and p.description and len(p.description) < 140
    assert isinstance(p.expected.get("cards"), list)
    ids = [(r["resourceType"], r["id"]) for r in p.resources]
    assert len(set(ids)) == len(ids)
    for r in p.resources:
        assert r["resourceType"] and r["id"].startswith(p.patient_id)
        if r["resourceType"] != "Patient":
            assert r["subject"] == {"reference": f"Patient/{p.patient_id}"}
    assert next(r for r in p.resources if r["resourceType"] == "Patient")["id"] == p.patient_id
    order = p.draft_order
    assert order["resourceType"] == "ServiceRequest" and order["status"] == "draft"
    assert order["intent"] == "order" and order["id"].startswith(p.patient_id)


@pytest.mark.parametrize("name", NAMES)
def test_every_resource_is_valid_r4(name: str) -> None:
    p = demo.patient(name, NOW)
    for r in [*p.resources, p.draft_order]:
        model = get_fhir_model_class(r["resourceType"]).model_validate(r)
        assert model.id == r["id"]


@pytest.mark.parametrize("name", NAMES)
def test_dates_move_with_now(name: str) -> None:
    later = NOW + timedelta(days=123, hours=5)
    a, b = demo.patient(name, NOW), demo.patient(name, later)
    for ra, rb in zip(a.resources, b.resources, strict=True):
        for key in ("effectiveDateTime", "authoredOn", "onsetDateTime"):
            if key in ra:
                assert _when(rb[key]) - _when(ra[key]) == later - NOW
        if "birthDate" in ra:
            assert ra["birthDate"] != rb["birthDate"]
    # nothing is dated in the future
    for r in a.resources:
        for key in ("effectiveDateTime", "authoredOn", "onsetDateTime", "issued"):
            if key in r:
                assert _when(r[key]) <= NOW


@pytest.mark.parametrize("name", NAMES)
def test_sorted_searches_have_no_ties(name: str) -> None:
    """Servers order equal dates arbitrarily; distinct dates keep `_sort=-date` comparable everywhere."""
    p = demo.patient(name, NOW)
    for rtype, key in (("Observation", "effectiveDateTime"), ("Procedure", "performedPeriod")):
        dates = [str(r[key]) for r in p.resources if r["resourceType"] == rtype]
        assert len(dates) == len(set(dates))


def test_naive_now_is_utc() -> None:
    assert demo.patient("high-level", NOW.replace(tzinfo=None)) == demo.patient("high-level", NOW)


def test_level_units_cover_ug_ng_and_mg() -> None:
    units = set()
    for name in NAMES:
        for r in demo.patient(name, NOW).resources:
            if (
                r["resourceType"] == "Observation"
                and r["code"]["text"] == "Natalizumab [Mass/volume] in Serum"
            ):
                assert r["code"]["coding"][0] == {
                    "system": "http://example.org/fhir/CodeSystem/local-lab",
                    "code": "NTZ-LVL",
                    "display": "Natalizumab serum concentration",
                }
                units.add(r["valueQuantity"]["code"])
    assert {"ug/mL", "ng/mL", "mg/L", "[IU]/mL"} <= units


def _levels(p: demo.DemoPatient) -> list[dict]:
    return [
        r
        for r in p.resources
        if r["resourceType"] == "Observation" and r["code"]["text"].startswith("Natalizumab [")
    ]


def _kinds(p: demo.DemoPatient, rtype: str) -> list[dict]:
    return [r for r in p.resources if r["resourceType"] == rtype]


def test_scenarios_hold_what_their_names_say() -> None:
    def get(n: str) -> demo.DemoPatient:
        return demo.patient(n, NOW)

    high = get("high-level")
    (lvl,) = _levels(high)
    assert lvl["valueQuantity"]["value"] == 28 and NOW - _when(lvl["effectiveDateTime"]) == timedelta(days=1)
    assert high.draft_order["quantityQuantity"] == {"value": 5, "unit": "sessions"}
    assert high.draft_order["occurrenceTiming"]["repeat"] == {
        "count": 5,
        "frequency": 1,
        "period": 2,
        "periodUnit": "d",
    }

    decayed = get("decayed-level")
    (lvl,) = _levels(decayed)
    assert NOW - _when(lvl["effectiveDateTime"]) == timedelta(days=20) and not _kinds(decayed, "Procedure")

    post = get("post-session")
    (session,) = _kinds(post, "Procedure")
    after = _when(_levels(post)[-1]["effectiveDateTime"]) - _when(session["performedPeriod"]["end"])
    assert after == timedelta(hours=6)

    mid = get("mid-course")
    first, last = sorted(_levels(mid), key=lambda r: r["effectiveDateTime"])
    sessions = [_when(s["performedPeriod"]["start"]) for s in _kinds(mid, "Procedure")]
    assert len(sessions) == 3
    assert all(_when(first["effectiveDateTime"]) < s < _when(last["effectiveDateTime"]) for s in sessions)
    r_obs = (last["valueQuantity"]["value"] / first["valueQuantity"]["value"]) ** (1 / 3)
    assert r_obs == pytest.approx(mid.expected["fitted_removal_fraction"], abs=0.01)

    below = get("below-target")
    assert _levels(below)[-1]["valueQuantity"]["comparator"] == "<"

    ada = [r for r in _kinds(get("antibodies"), "Observation") if r["code"]["coding"][0]["code"] == "58012-6"]
    pos = [_when(r["effectiveDateTime"]) for r in ada if r["valueCodeableConcept"]["text"] == "Positive"]
    assert len(pos) == 2 and max(pos) - min(pos) >= timedelta(weeks=6)

    nolevel = get("no-level")
    assert not _levels(nolevel)
    (stmt,) = [r for r in _kinds(nolevel, "MedicationStatement")]
    assert stmt["medicationCodeableConcept"]["coding"][0]["code"] == "354770"
    assert NOW - _when(stmt["effectivePeriod"]["end"]) == timedelta(days=10)

    brain = get("brainstem-pml")
    pml = next(c for c in _kinds(brain, "Condition") if c["code"]["coding"][0]["code"] == "22255007")
    assert (
        pml["bodySite"][0]["coding"][0]["code"] == "15926001" and "pons" in pml["bodySite"][0]["text"].lower()
    )
    assert "enhancement" in pml["note"][0]["text"]

    fingo = get("active-fingolimod")
    assert any(
        r["status"] == "active" and r["medicationCodeableConcept"]["coding"][0]["code"] == "1012892"
        for r in _kinds(fingo, "MedicationStatement")
    )

    lympho = get("lymphopenia")
    counts = sorted(
        (r["effectiveDateTime"], r["valueQuantity"]["value"])
        for r in _kinds(lympho, "Observation")
        if r["code"]["coding"][0]["code"] == "731-0"
    )
    assert counts[-1][1] == 0.4
    assert any(
        r["medicationCodeableConcept"]["coding"][0]["code"] == "1373478"
        for r in _kinds(lympho, "MedicationRequest")
    )

    odd = sorted(
        (r["valueQuantity"]["value"], r["valueQuantity"]["unit"]) for r in _levels(get("implausible-values"))
    )
    assert odd == [(12, "IU/mL"), (15, "ug/mL"), (5000, "ug/mL")]

    mri = get("non-plex-order")
    assert "36514" not in str(mri.draft_order) and "MRI" in mri.draft_order["code"]["text"]

    mg = get("no-natalizumab")
    meds = [
        r["medicationCodeableConcept"] for r in mg.resources if r["resourceType"].startswith("Medication")
    ]
    assert meds and not any("354770" in str(m) or "natalizumab" in str(m).lower() for m in meds)
    assert not any(
        "atalizumab" in str(r.get("code")) for r in mg.resources if r["resourceType"] == "Observation"
    )
    assert "natalizumab" not in str([mg.draft_order["code"], mg.draft_order["reasonCode"]]).lower()
    assert mg.draft_order["code"]["coding"][0]["code"] == "36514"

    short = get("course-short")
    assert short.draft_order["quantityQuantity"]["value"] == 2
    assert short.expected["remaining_estimate"] > 2


@pytest.mark.parametrize(
    "name", [n for n in NAMES if demo.patient(n, NOW).expected.get("remaining_estimate") is not None]
)
def test_expected_estimate_follows_the_reference_model(name: str) -> None:
    """clinical-reference.md §7.1 with r 0.50, t½ 11 d, target 1 µg/mL, over the latest usable level."""
    p = demo.patient(name, NOW)
    per_ug = {"ug/mL": 1.0, "mg/L": 1.0, "ng/mL": 0.001}
    usable = [
        r
        for r in _levels(p)
        if r["valueQuantity"]["unit"] in per_ug
        and r["valueQuantity"]["value"] * per_ug[r["valueQuantity"]["unit"]] < 1000
    ]
    latest = max(usable, key=lambda r: r["effectiveDateTime"])
    c = latest["valueQuantity"]["value"] * per_ug[latest["valueQuantity"]["unit"]]
    r = p.expected.get("fitted_removal_fraction", 0.5)
    if "post-session-sample" in p.expected.get("flags", []):
        c *= 1.75  # equilibrated ≈ 1.5-2 × a sample drawn within 24 h of a session
    days = (NOW - _when(latest["effectiveDateTime"])).total_seconds() / 86400
    c_now = c * math.exp(-days * math.log(2) / 11)
    n = 0 if c_now <= 1.0 else math.ceil(math.log(1.0 / c_now) / math.log(r))
    assert n == p.expected["remaining_estimate"]


# ---------------------------------------------------------------- prefetch evaluator


@pytest.mark.parametrize("name", NAMES)
def test_prefetch_holds_what_it_should(name: str) -> None:
    p = demo.patient(name, NOW)
    pf = demo.resolve_prefetch(TEMPLATES, p.resources, p.patient_id)
    assert set(pf) == set(TEMPLATES)
    assert pf["patient"]["id"] == p.patient_id
    by_type = {
        t: {r["id"] for r in p.resources if r["resourceType"] == t}
        for t in (
            "Observation",
            "MedicationStatement",
            "MedicationRequest",
            "MedicationAdministration",
            "Condition",
            "Procedure",
        )
    }
    lab_ids = {
        r["id"]
        for r in p.resources
        if r["resourceType"] == "Observation" and r["category"][0]["coding"][0]["code"] == "laboratory"
    }
    assert set(_ids(pf["labs"])) == lab_ids  # every demo observation is a laboratory one
    assert set(_ids(pf["lymphocytes"])) == {
        r["id"]
        for r in p.resources
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "731-0"
    }
    assert set(_ids(pf["medicationStatements"])) == by_type["MedicationStatement"]
    assert set(_ids(pf["medicationRequests"])) == by_type["MedicationRequest"]
    assert set(_ids(pf["medicationAdministrations"])) == by_type["MedicationAdministration"]
    assert set(_ids(pf["patientStatus"])) == {
        r["id"]
        for r in p.resources
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] in ("82810-3", "29463-7")
    }
    assert set(_ids(pf["conditions"])) == by_type["Condition"]
    assert set(_ids(pf["procedures"])) == by_type["Procedure"]
    for key, value in pf.items():
        if key == "patient":
            continue
        assert value["resourceType"] == "Bundle" and value["type"] == "searchset"
        assert value["total"] == len(value.get("entry", []))
        assert "entry" not in value or value["entry"]  # no empty arrays
        for e in value.get("entry", []):
            assert e["fullUrl"].endswith(f"/{e['resource']['resourceType']}/{e['resource']['id']}")
    dates = [e["resource"]["effectiveDateTime"] for e in pf["labs"].get("entry", [])]
    assert dates == sorted(dates, reverse=True)
    get_fhir_model_class("Bundle").model_validate(pf["labs"])


def test_evaluator_search_semantics() -> None:
    p = demo.patient("mid-course", NOW)
    pid = p.patient_id
    t = {
        "read_missing": "Patient/nobody",
        "by_code": "Observation?patient={{context.patientId}}&code=http://loinc.org|58012-6,http://x|y",
        "any_system": "Observation?patient=Patient/{{context.patientId}}&code=NTZ-LVL&_sort=date",
        "wrong_system": "Observation?subject={{context.patientId}}&code=http://loinc.org|NTZ-LVL",
        "count": "Observation?patient={{context.patientId}}&category=laboratory&_sort=-date&_count=1",
        "status": "Procedure?patient={{context.patientId}}&status=completed,in-progress",
        "no_status": "Procedure?patient={{context.patientId}}&status=in-progress",
        "med_code": "MedicationRequest?patient={{context.patientId}}&code=http://www.nlm.nih.gov/research/umls/rxnorm|354770",
        "other_patient": "Condition?patient=demo-high-level",
    }
    pf = demo.resolve_prefetch(t, p.resources, pid)
    assert pf["read_missing"] is None
    assert _ids(pf["by_code"]) == [f"{pid}-ada-1"]
    assert [e["resource"]["valueQuantity"]["value"] for e in pf["any_system"]["entry"]] == [32, 4.8]
    assert pf["wrong_system"]["total"] == 0 and "entry" not in pf["wrong_system"]
    assert pf["count"]["total"] == 4 and _ids(pf["count"]) == [f"{pid}-ntz-2"]
    assert pf["status"]["total"] == 3 and pf["no_status"]["total"] == 0
    assert pf["med_code"]["total"] == 1
    assert pf["other_patient"]["total"] == 0
    with pytest.raises(ValueError, match="not supported"):
        demo.resolve_prefetch({"x": "Observation?patient=a&value-quantity=gt5"}, p.resources, pid)
    with pytest.raises(ValueError, match="_sort"):
        demo.resolve_prefetch({"x": "Condition?patient=a&_sort=-date"}, p.resources, pid)
    with pytest.raises(ValueError, match="token"):
        demo.resolve_prefetch({"x": "Patient/{{context.encounterId}}"}, p.resources, pid)


def test_site_level_codes_narrow_labs() -> None:
    p = demo.patient("high-level", NOW)
    narrowed = prefetch_templates(Settings(auth="off", natalizumab_level_codes=[NTZ_LEVEL_CODE]))
    pf = demo.resolve_prefetch(narrowed, p.resources, p.patient_id)
    codes = {e["resource"]["code"]["coding"][0]["code"] for e in pf["labs"]["entry"]}
    assert codes == {"NTZ-LVL", "58012-6"}


# ---------------------------------------------------------------- hook requests


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_hook_request_shape(name: str, hook: str) -> None:
    p = demo.patient(name, NOW)
    body = demo.hook_request(p, hook)  # type: ignore[arg-type]
    assert body["hook"] == hook
    assert uuid.UUID(body["hookInstance"]).version == 4
    ctx = body["context"]
    assert ctx["userId"] == "Practitioner/demo-neuro" and ctx["patientId"] == p.patient_id
    assert ctx["draftOrders"] == {"resourceType": "Bundle", "entry": [{"resource": p.draft_order}]}
    assert "type" not in ctx["draftOrders"]
    if hook == "order-select":
        assert ctx["selections"] == [f"ServiceRequest/{p.draft_order['id']}"]
    else:
        assert "selections" not in ctx
    assert set(body["prefetch"]) == set(TEMPLATES)
    assert "fhirServer" not in body and "fhirAuthorization" not in body


def test_hook_request_variants() -> None:
    p = demo.patient("high-level", NOW)
    a, b = demo.hook_request(p, "order-select"), demo.hook_request(p, "order-select")
    assert a["hookInstance"] != b["hookInstance"]
    bare = demo.hook_request(
        p, "order-sign", prefetch=False, fhir_server="http://127.0.0.1:9/fhir", token="t0k"
    )
    assert "prefetch" not in bare
    assert bare["fhirServer"] == "http://127.0.0.1:9/fhir"
    assert bare["fhirAuthorization"] == {
        "access_token": "t0k",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds-pml-plex",
        "patient": p.patient_id,
    }
    open_server = demo.hook_request(p, "order-sign", fhir_server="http://127.0.0.1:9/fhir")
    assert "fhirAuthorization" not in open_server and open_server["prefetch"]
    with pytest.raises(ValueError):
        demo.hook_request(p, "order-sign", token="t0k")
    with pytest.raises(ValueError):
        demo.hook_request(p, "patient-view")  # type: ignore[arg-type]
    # the request builder never shares state with the patient
    a["context"]["draftOrders"]["entry"][0]["resource"]["status"] = "active"
    a["prefetch"]["patient"]["id"] = "changed"
    assert p.draft_order["status"] == "draft" and p.resources[0]["id"] == p.patient_id
