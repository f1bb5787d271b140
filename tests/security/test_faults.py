"""Fault injection: a misbehaving FHIR server process. Every hook call answers within the deadline with
200 or 412 (an OperationOutcome), never 5xx, and a card or the outcome says what could not be read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from cds import demo
from cds.settings import Settings
from tests.security.fake_fhir import MODES
from tests.security.procs import fake_fhir_process
from tests.support.servers import serve_service

DEADLINE_S = 1.8
SLACK_S = 1.0  # processing, rendering and loopback HTTP on a busy CI machine


@pytest.fixture(scope="module")
def patient() -> Any:
    return demo.patient(
        "high-level" if "high-level" in demo.scenarios() else demo.scenarios()[0], datetime.now(UTC)
    )


@pytest.fixture(scope="module")
def fhir(patient: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_fhir_process(patient, tmp_path_factory.mktemp("fake-fhir")) as base:
        yield base


@pytest.fixture(scope="module")
def service(fhir: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(
        _env_file=None,
        auth="off",
        state_dir=tmp_path_factory.mktemp("faults"),
        fhir_server_allowlist=[fhir + "/"],
        fhir_deadline_s=DEADLINE_S,
        fhir_timeout_s=1.0,
    )
    with serve_service(settings) as base:
        yield base


def post(service: str, body: dict[str, Any]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = httpx.post(service + "/cds-services/pml-plex-select", json=body, timeout=30)
    return r, time.monotonic() - started


def test_the_healthy_server_gives_cards(service: str, fhir: str, patient: Any) -> None:
    body = demo.hook_request(
        patient, "order-select", prefetch=False, fhir_server=f"{fhir}/ok/fhir", token="t"
    )
    r, _ = post(service, body)
    assert r.status_code == 200, r.text
    assert r.json()["cards"], "control: the same patient read from a healthy server gives cards"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prefetch", ["none", "partial"])
def test_misbehaving_server_degrades_within_the_deadline(
    service: str, fhir: str, patient: Any, mode: str, prefetch: str
) -> None:
    body = demo.hook_request(
        patient, "order-select", prefetch=prefetch == "partial", fhir_server=f"{fhir}/{mode}/fhir", token="t"
    )
    if prefetch == "partial":
        body["prefetch"] = {k: v for k, v in body["prefetch"].items() if k not in ("labs", "procedures")}
    r, elapsed = post(service, body)
    assert r.status_code in (200, 412), (r.status_code, r.text[:500])
    assert elapsed < DEADLINE_S + SLACK_S, f"{mode}: answered after {elapsed:.2f} s"
    if r.status_code == 412:
        assert r.json()["resourceType"] == "OperationOutcome"
    elif prefetch == "partial":
        assert r.json()["cards"], "partial data still gives cards"
        details = " ".join(c.get("detail", "") for c in r.json()["cards"])
        assert "could not be" in details.lower(), "a card names what could not be read"
