"""Checklist P0-8 against a real FHIR server: per prefetch key present / absent / null / OperationOutcome /
wrong type, plus no `prefetch` field, with and without the fhirServer fallback. Never a 500; absent and
OperationOutcome keys are fetched from fhirServer and give the same cards as a full prefetch; required
data from nowhere gives 412 with an OperationOutcome; a down or refusing FHIR server answers in time."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from cds import demo
from cds.fhir_io import prefetch_templates
from cds.settings import Settings
from tests.integration import service_support as svc
from tests.support.fhir import FhirServer
from tests.support.servers import free_port

KEYS = list(prefetch_templates(Settings(_env_file=None)))
OO = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "exception", "diagnostics": "EHR could not run the query"}],
}
HOOK = "order-select"
DEAD_PORT = free_port()
EXTRA_FHIR_ALLOW = (f"http://127.0.0.1:{DEAD_PORT}/",)  # the `running` service may try it


@pytest.fixture(scope="module")
def patient(fhir_server: FhirServer) -> demo.DemoPatient:
    return svc.load_demo(fhir_server, "active-fingolimod", "matrix")


@pytest.fixture(scope="module")
def full(fhir_server: FhirServer, running: tuple[str, Settings], patient: demo.DemoPatient) -> dict[str, Any]:
    return svc.with_prefetch(fhir_server, patient, HOOK, running[1])


@pytest.fixture(scope="module")
def baseline(running: tuple[str, Settings], full: dict[str, Any]) -> list[Any]:
    return svc.comparable(_post(running[0], full, 200))


def _post(url: str, body: dict[str, Any], *expected: int) -> dict[str, Any]:
    return svc.post_hook(url, HOOK, body, *expected)


def _variant(full: dict[str, Any], key: str, case: str) -> dict[str, Any]:
    body = copy.deepcopy(full)
    if case == "absent":
        del body["prefetch"][key]
    elif case == "null":
        body["prefetch"][key] = None
    elif case == "operation-outcome":
        body["prefetch"][key] = OO
    elif case == "wrong-type":
        body["prefetch"][key] = "not a resource"
    elif case == "wrong-resource":
        body["prefetch"][key] = {"resourceType": "Basic", "id": "x", "code": {"text": "x"}}
    return body


def _with_fallback(server: FhirServer, body: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["fhirServer"] = server.base_url
    body["fhirAuthorization"] = {
        "access_token": server.token or "t",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds-pml-plex",
    }
    return body


@pytest.mark.parametrize("key", KEYS)
def test_present_equals_baseline(
    running: tuple[str, Settings], full: dict[str, Any], baseline: list[Any], key: str
) -> None:
    body = _post(running[0], _variant(full, key, "present"), 200)
    assert svc.comparable(body) == baseline


@pytest.mark.parametrize("case", ["absent", "operation-outcome", "wrong-type"])
@pytest.mark.parametrize("key", KEYS)
def test_unsatisfied_key_is_fetched(
    fhir_server: FhirServer,
    running: tuple[str, Settings],
    full: dict[str, Any],
    baseline: list[Any],
    key: str,
    case: str,
) -> None:
    body = _post(running[0], _with_fallback(fhir_server, _variant(full, key, case)), 200)
    assert svc.comparable(body) == baseline


@pytest.mark.parametrize("case", ["absent", "null", "operation-outcome", "wrong-type", "wrong-resource"])
@pytest.mark.parametrize("key", KEYS)
def test_no_fallback_never_500(
    running: tuple[str, Settings], full: dict[str, Any], key: str, case: str
) -> None:
    body = _post(running[0], _variant(full, key, case), 200, 412)
    if body["status"] == 200 and key != "patient" and case in ("absent", "operation-outcome", "wrong-type"):
        details = " ".join(c.get("detail", "") for c in body["cards"])
        assert "Could not be" in details, f"{key}/{case}: what could not be read must be named"


def test_null_means_no_data(running: tuple[str, Settings], full: dict[str, Any]) -> None:
    body = _variant(full, "medicationStatements", "null")
    body = _variant(body, "medicationRequests", "null")
    out = _post(running[0], body, 200)
    # no fingolimod on record any more: the active conflict disappears, nothing is fetched
    dmt = next(c for c in out["cards"] if c["extension"]["pml-plex"]["kind"] == "dmt")
    assert "activeConflicts" not in dmt["extension"]["pml-plex"]


def test_no_prefetch_field(
    fhir_server: FhirServer, running: tuple[str, Settings], patient: demo.DemoPatient, baseline: list[Any]
) -> None:
    assert (
        svc.comparable(_post(running[0], svc.without_prefetch(fhir_server, patient, HOOK), 200)) == baseline
    )
    bare = demo.hook_request(patient, HOOK, prefetch=False)
    _post(running[0], bare, 412)


def test_draft_orders_without_bundle_type(
    running: tuple[str, Settings], full: dict[str, Any], baseline: list[Any]
) -> None:
    body = copy.deepcopy(full)
    body["context"]["draftOrders"].pop("type", None)
    assert svc.comparable(_post(running[0], body, 200)) == baseline
    body["context"]["draftOrders"]["type"] = "collection"
    assert svc.comparable(_post(running[0], body, 200)) == baseline


@pytest.mark.parametrize("where", ["refused-token", "server-down"])
def test_fhir_server_failures_answer_in_time(
    fhir_server: FhirServer,
    running: tuple[str, Settings],
    patient: demo.DemoPatient,
    full: dict[str, Any],
    where: str,
) -> None:
    url, settings = running
    body = svc.without_prefetch(fhir_server, patient, HOOK)
    if where == "refused-token":
        if not fhir_server.token:
            pytest.skip("this FHIR server does not check tokens")
        body["fhirAuthorization"]["access_token"] = "wrong-token"
    else:
        body["fhirServer"] = f"http://127.0.0.1:{DEAD_PORT}/fhir"
    started = time.monotonic()
    _post(url, body, 200, 412)
    assert time.monotonic() - started < settings.fhir_deadline_s + 2.0
    # partial prefetch + failing server: cards from what was prefetched, naming what is missing
    part = copy.deepcopy(full)
    del part["prefetch"]["conditions"]
    part["fhirServer"], part["fhirAuthorization"] = body["fhirServer"], body["fhirAuthorization"]
    out = _post(url, part, 200, 412)
    if out["status"] == 200:
        assert any("Could not be" in c.get("detail", "") for c in out["cards"])
