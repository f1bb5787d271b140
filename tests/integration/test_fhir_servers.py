"""The service's prefetch templates on real FHIR R4 servers, against the demo evaluator (sekmet, Medplum
and, when CDS_TEST_FHIR_BASE is set, that server: `make test-live`).

Two demo patients are loaded into each server; every template, resolved by the server, must return
the same resources (same ids; same order where the template sorts) as `cds.demo.resolve_prefetch`
returns in memory. This proves the templates work on real servers and the evaluator is faithful.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from cds import demo
from cds.demo.builder import NTZ_LEVEL_CODE
from cds.fhir_io import prefetch_templates
from cds.settings import Settings
from tests.support.fhir import RUN_ID, FhirServer, load_resources, prefetch_from_server, run_suffix, suffixed

# small on purpose: Medplum's in-memory engine is slow with _sort at scale
PATIENTS = ("mid-course", "active-fingolimod")
NOW = datetime.now(UTC).replace(microsecond=0)
SETTINGS = {
    "default": Settings(auth="off"),
    "site-codes": Settings(auth="off", natalizumab_level_codes=[NTZ_LEVEL_CODE]),
}


def _load(server: FhirServer, suffix: str) -> list[demo.DemoPatient]:
    patients = [suffixed(demo.patient(n, NOW), suffix) for n in PATIENTS]
    for p in patients:
        load_resources(server, p.resources)
    return patients


@pytest.fixture(scope="module")
def loaded(fhir_server: FhirServer) -> tuple[FhirServer, list[demo.DemoPatient]]:
    # unique ids per run: the fixture's state dir is fresh, but a reused server must not collide
    return fhir_server, _load(fhir_server, run_suffix("servers"))


def _ids(value: Any) -> list[str]:
    if value is None:
        return []
    if value.get("resourceType") != "Bundle":
        return [f"{value['resourceType']}/{value['id']}"]
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in value.get("entry", [])]


def _assert_same(server: FhirServer, patients: list[demo.DemoPatient], settings: Settings) -> None:
    templates = prefetch_templates(settings)
    with_data: set[str] = set()
    for p in patients:
        real = prefetch_from_server(server, templates, p.patient_id)
        memory = demo.resolve_prefetch(templates, p.resources, p.patient_id)
        assert set(real) == set(memory) == set(templates)
        for key, template in templates.items():
            got, want = _ids(real[key]), _ids(memory[key])
            if want:
                with_data.add(key)
            assert not [i for i in got if i.startswith("OperationOutcome/")], (
                f"{server.kind} did not understand {template}: {real[key]}"
            )
            if "_sort=" in template:
                assert got == want, f"{server.kind} {p.name}/{key}: {template}"
            else:
                assert sorted(got) == sorted(want), f"{server.kind} {p.name}/{key}: {template}"
                assert len(got) == len(set(got))
            if (
                isinstance(real[key], dict)
                and real[key].get("resourceType") == "Bundle"
                and "total" in real[key]
            ):
                assert real[key]["total"] == memory[key]["total"], f"{server.kind} {p.name}/{key}"
    assert with_data == set(templates), "the chosen demo patients should exercise every key"


@pytest.mark.parametrize("variant", list(SETTINGS))
def test_templates_agree_with_in_memory_evaluator(
    loaded: tuple[FhirServer, list[demo.DemoPatient]], variant: str
) -> None:
    server, patients = loaded
    _assert_same(server, patients, SETTINGS[variant])


def test_patients_do_not_leak_into_each_other(loaded: tuple[FhirServer, list[demo.DemoPatient]]) -> None:
    server, (a, b) = loaded
    real = prefetch_from_server(server, prefetch_templates(SETTINGS["default"]), a.patient_id)
    other = {r["id"] for r in b.resources}
    for value in real.values():
        assert not {i.split("/")[1] for i in _ids(value)} & other


def test_paging_is_followed(loaded: tuple[FhirServer, list[demo.DemoPatient]]) -> None:
    server, (p, _) = loaded
    n_labs = sum(
        1
        for r in p.resources
        if r["resourceType"] == "Observation" and r["category"][0]["coding"][0]["code"] == "laboratory"
    )  # a body weight is vital-signs
    paged = {"labs": "Observation?patient={{context.patientId}}&category=laboratory&_sort=-date&_count=2"}
    real = prefetch_from_server(server, paged, p.patient_id)
    assert n_labs > 2 and len(_ids(real["labs"])) == n_labs == real["labs"]["total"]
    memory = demo.resolve_prefetch(
        {"labs": paged["labs"].replace("_count=2", "_count=50")}, p.resources, p.patient_id
    )
    assert _ids(real["labs"]) == _ids(memory["labs"])


def test_missing_patient_reads_as_none(loaded: tuple[FhirServer, list[demo.DemoPatient]]) -> None:
    server, _ = loaded
    missing = f"no-such-patient-{RUN_ID}"  # on a shared sandbox anyone may have made "no-such-patient"
    real = prefetch_from_server(server, {"patient": "Patient/{{context.patientId}}"}, missing)
    assert real == {"patient": None}


def test_reload_is_idempotent(loaded: tuple[FhirServer, list[demo.DemoPatient]]) -> None:
    server, (p, _) = loaded
    load_resources(server, p.resources)
    load_resources(server, p.resources, mode="put")
    _assert_same(server, [p], SETTINGS["default"])


def test_bearer_token_is_enforced(loaded: tuple[FhirServer, list[demo.DemoPatient]]) -> None:
    server, (p, _) = loaded
    if server.kind == "live" or not server.token:
        pytest.skip(f"{server.kind}: no token of ours to enforce (a live sandbox's access rules are its own)")
    url = f"{server.base_url}/Patient/{p.patient_id}"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, timeout=10, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, timeout=10, headers=server.headers()).status_code == 200


@pytest.mark.live
def test_templates_agree_on_live_server(live_fhir_server: FhirServer) -> None:
    patients = _load(live_fhir_server, run_suffix("live"))
    _assert_same(live_fhir_server, patients, SETTINGS["default"])
