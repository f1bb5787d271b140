"""Real FHIR R4 servers for integration tests: sekmet and Medplum's engine, one parametrised fixture.

`fhir_server` starts each kind once per test session (free loopback port, random Bearer token, its own
state dir under pytest's tmp) and stops it at the end. Installing is shared under .fhir-server/.
`live_fhir_server` is the public sandbox named by CDS_TEST_FHIR_BASE (tests marked `live`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.support.fhir import KINDS, FhirServer, FhirServerUnavailable, reachable, run_fhir_server


@pytest.fixture(scope="session", params=KINDS)
def fhir_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FhirServer]:
    kind: str = request.param
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(
                run_fhir_server(kind, state_dir=tmp_path_factory.mktemp(f"fhir-{kind}"))
            )
        except FhirServerUnavailable as exc:
            if os.environ.get("CDS_TEST_REQUIRE_FHIR") == "1":
                pytest.fail(f"CDS_TEST_REQUIRE_FHIR=1 and {exc}")
            pytest.skip(f"FHIR server not installable here: {exc}")
        yield server


@pytest.fixture(scope="session")
def live_fhir_server() -> FhirServer:
    base = os.environ.get("CDS_TEST_FHIR_BASE", "").rstrip("/")
    if not base:
        pytest.skip("CDS_TEST_FHIR_BASE is not set")
    why = reachable(base)
    if why:
        pytest.skip(f"live FHIR server: {why}")
    return FhirServer(kind="live", base_url=base, token=os.environ.get("CDS_TEST_FHIR_TOKEN") or None)
