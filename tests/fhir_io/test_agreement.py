"""The slim hot-path models and fhir.resources R4B read the same values from the same resources.

Every resource of the realistic prefetch and of every demo patient (and every draft order) is
validated by both. For each field the slim model reads, the R4B model must hold the same value
(numbers compared as numbers, dates as instants); and the domain facts built with `strict_fhir`
(slim + R4B) equal those built from the slim models alone, with nothing skipped.
"""

from __future__ import annotations

import importlib
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from cds.demo.scenarios import build, scenario_names
from cds.fhir.elements import validate_resource
from cds.fhir.facts import parse_resources
from cds.fhir.orders import plex_orders
from cds.fhir.shapes import RESOURCES
from cds.fhir.terms import parse_fhir_datetime
from cds.settings import Settings
from tests.fhir_io.fixtures import NOW, PATIENT, realistic_prefetch


def _r4b(resource: dict[str, Any]) -> Any:
    name = resource["resourceType"]
    module = importlib.import_module(f"fhir.resources.R4B.{name.lower()}")
    return getattr(module, name).model_validate(resource)


def _prefetch_resources() -> list[dict[str, Any]]:
    out = []
    for value in realistic_prefetch().values():
        out.extend(e["resource"] for e in value["entry"]) if value[
            "resourceType"
        ] == "Bundle" else out.append(value)
    return out


def _demo() -> list[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    cases = []
    for name in scenario_names():
        pid, _sc, resources, order = build(name, NOW)
        cases.append((pid, resources, order))
    return cases


ALLRESOURCES = _prefetch_resources() + [r for _pid, rs, order in _demo() for r in [*rs, order]]


def _same_resource(slim: Any, r4b: Any, path: str) -> None:
    """A top-level slim resource (a TypedDict): every element it declares, present or not, is compared."""
    assert isinstance(slim, dict) and r4b is not None, f"{path}: R4B has nothing"
    td = RESOURCES[slim["resourceType"]]
    for name in td.__required_keys__ | td.__optional_keys__:
        if name == "contained":  # plain dicts here; the contained Medication is compared below
            continue
        if name == "resourceType":
            assert slim[name] == r4b.get_resource_type(), path
            continue
        assert hasattr(r4b, name), f"{path}.{name}: not an R4B element"
        _same(slim.get(name), getattr(r4b, name), f"{path}.{name}")


def _same(slim: Any, r4b: Any, path: str) -> None:
    if isinstance(
        slim, dict
    ):  # a TypedDict leaf (CodeableConcept, Coding): absent keys are absent in R4B too
        assert r4b is not None, f"{path}: R4B has nothing"
        for name, value in slim.items():
            assert hasattr(r4b, name), f"{path}.{name}: not an R4B element"
            _same(value, getattr(r4b, name), f"{path}.{name}")
    elif isinstance(slim, list):
        r4b = r4b or []
        assert len(slim) == len(r4b), f"{path}: {len(slim)} != {len(r4b)}"
        for i, (a, b) in enumerate(zip(slim, r4b, strict=True)):
            _same(a, b, f"{path}[{i}]")
    elif slim is None:
        assert r4b in (None, []), f"{path}: slim None, R4B {r4b!r}"
    elif isinstance(slim, bool):
        assert r4b is slim, path
    elif isinstance(slim, (int, float)):
        assert isinstance(r4b, (int, float, Decimal)) and float(r4b) == float(slim), (
            f"{path}: {slim} != {r4b}"
        )
    elif isinstance(r4b, datetime):
        parsed = parse_fhir_datetime(slim)
        assert parsed is not None and parsed[0] == r4b.astimezone(UTC), f"{path}: {slim} != {r4b}"
    elif isinstance(r4b, date):
        assert slim == r4b.isoformat(), f"{path}: {slim} != {r4b}"
    else:
        assert str(slim) == str(r4b), f"{path}: {slim!r} != {r4b!r}"


@pytest.mark.parametrize("resource", ALLRESOURCES, ids=lambda r: f"{r['resourceType']}/{r.get('id')}")
def test_slim_and_r4b_read_the_same_fields(resource: dict[str, Any]) -> None:
    slim = validate_resource(resource, strict=False)
    assert slim is not None, "slim model refused a resource R4B should accept"
    r4b = _r4b(resource)
    _same_resource(slim, r4b, resource["resourceType"])
    for item in resource.get("contained", []):
        _same_resource(
            validate_resource(item, strict=False), _r4b(item), f"{resource['resourceType']}.contained"
        )


def test_strict_and_slim_give_the_same_facts_for_the_realistic_prefetch() -> None:
    resources = _prefetch_resources()
    slim = parse_resources(resources, Settings(), patient_id=PATIENT, now=NOW)
    strict = parse_resources(resources, Settings(strict_fhir=True), patient_id=PATIENT, now=NOW)
    assert strict == slim
    assert slim.skipped == 0 and slim.other_patient == 0
    facts = slim.facts
    assert (
        len(facts.levels),
        len(facts.sessions),
        len(facts.doses),
        len(facts.antibodies),
        len(facts.medications),
        len(facts.lymphocytes),
        len(facts.conditions),
        len(facts.unusable),
    ) == (4, 3, 2, 1, 5, 2, 2, 2)
    # the request's authoredOn is not a dose: the two doses are the statement's end and the administration
    assert [d.source for d in facts.doses] == [
        "MedicationStatement/ms-ntz",
        "MedicationAdministration/ma-ntz",
    ]
    assert (facts.patient.birth_date, facts.patient.pregnant, facts.patient.weight_kg) == (
        date(1984, 2, 11),
        False,
        68.0,
    )


@pytest.mark.parametrize("case", _demo(), ids=lambda c: c[0])
def test_strict_and_slim_agree_on_every_demo_patient(
    case: tuple[str, list[dict[str, Any]], dict[str, Any]],
) -> None:
    pid, resources, order = case
    slim = parse_resources(resources, Settings(), patient_id=pid, now=NOW)
    strict = parse_resources(resources, Settings(strict_fhir=True), patient_id=pid, now=NOW)
    assert strict == slim
    assert slim.skipped == 0 and slim.other_patient == 0
    draft = {"resourceType": "Bundle", "entry": [{"resource": order}]}
    assert plex_orders(draft, None, Settings()) == plex_orders(draft, None, Settings(strict_fhir=True))
