"""End to end against real FHIR R4 servers: every demo situation gives the right cards, and the prefetch
path and the no-prefetch fallback (fhirServer + bearer token) give the same cards. With
CDS_TEST_FHIR_BASE set, also against that server (`make test-live`; see tests/integration/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from cds import demo
from cds.settings import Settings
from tests.demo.scenarios import REQUIRED
from tests.hooks.checks import card, ext, kinds
from tests.integration import service_support as svc
from tests.support.fhir import FhirServer

SCENARIOS = demo.scenarios()


def test_required_situations_are_demo_patients() -> None:
    assert not set(REQUIRED) - set(SCENARIOS)


@pytest.fixture(scope="module")
def patients(fhir_server: FhirServer) -> dict[str, demo.DemoPatient]:
    return {name: svc.load_demo(fhir_server, name, "e2e") for name in SCENARIOS}


def _expectations(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert sorted(kinds(body)) == sorted(expected["cards"])
    ranks = [("critical", "warning", "info").index(c["indicator"]) for c in body["cards"]]
    assert ranks == sorted(ranks)  # most severe first (issue 17)
    if not expected["cards"]:
        return
    e = ext(body, "plex-estimate")
    if "basis" in expected:
        assert e["basis"] == expected["basis"]
    if "remaining_estimate" in expected:
        assert abs(e["remainingSessions"]["estimate"] - expected["remaining_estimate"]) <= 1, e
    if "sessions_completed" in expected:
        assert e["sessionsCompleted"] == expected["sessions_completed"]
    if "ordered_sessions" in expected:
        assert e.get("orderedSessions") == expected["ordered_sessions"]
    if "comparator" in expected:
        assert e["latestLevel"]["comparator"] == expected["comparator"]
    if expected.get("basis") == "measured":
        assert e["latestLevel"]["date"].endswith(("Z", "+00:00")) and "T" in e["latestLevel"]["date"]
    if expected.get("basis") == "dosing-history":
        assert set(e.get("latestLevel", {})) <= {"adjusted", "unit"}
    if "iris_risk" in expected:
        assert ext(body, "iris")["risk"] == expected["iris_risk"]
    for word in expected.get("iris_reasons", []):
        assert any(word in r for r in ext(body, "iris")["reasons"]), word
    d = ext(body, "dmt")
    assert sorted(d.get("activeConflicts", [])) == sorted(expected.get("active_conflicts", []))
    if expected.get("active_conflicts"):
        assert card(body, "dmt")["indicator"] in ("warning", "critical")
    avoid = set(d.get("avoid", []))
    for s in card(body, "dmt").get("suggestions", []):
        for a in s["actions"]:
            if a["type"] != "create":  # an update stops an active conflicting order: it names that drug
                assert a["resource"]["status"] == "stopped"
                continue
            concept = a["resource"]["medicationCodeableConcept"]
            assert concept["text"].lower() not in avoid
    if expected.get("fumarate_advised") is False:
        offered = [
            a["resource"]["medicationCodeableConcept"]["text"]
            for s in card(body, "dmt").get("suggestions", [])
            for a in s["actions"]
        ]
        assert not [o for o in offered if "fumarate" in o]
        assert "0.4" in card(body, "dmt")["detail"]
    if expected.get("suggest_update_sessions"):
        updates = [
            a
            for s in card(body, "plex-estimate").get("suggestions", [])
            for a in s["actions"]
            if a["type"] == "update"
        ]
        assert (
            updates
            and abs(updates[0]["resource"]["quantityQuantity"]["value"] - expected["suggest_update_sessions"])
            <= 1
        )
    if expected.get("unusable"):
        assert "could not be used or read" in card(body, "plex-estimate")["detail"].lower()
    assert "Drug clearance only" in card(body, "plex-estimate")["detail"]


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_prefetch_and_fallback_agree(
    fhir_server: FhirServer,
    running: tuple[str, Settings],
    patients: dict[str, demo.DemoPatient],
    name: str,
    hook: str,
) -> None:
    url, settings = running
    p = patients[name]
    via_prefetch = svc.post_hook(url, hook, svc.with_prefetch(fhir_server, p, hook, settings), 200)
    via_fhir = svc.post_hook(url, hook, svc.without_prefetch(fhir_server, p, hook), 200)
    _expectations(via_prefetch, p.expected)
    assert svc.comparable(via_prefetch) == svc.comparable(via_fhir)
