"""Real FHIR R4 servers for integration tests: sekmet, Medplum's engine and, when named, a live sandbox.

`fhir_server` starts each local kind once per test session (free loopback port, random Bearer token,
its own state dir under pytest's tmp) and stops it at the end. Installing is shared under .fhir-server/.
When CDS_TEST_FHIR_BASE names a FHIR R4 base URL (token: CDS_TEST_FHIR_TOKEN), `fhir_server` has a third
parameter, "live", marked `live` (`make test-live` = `pytest -m live tests/integration` runs only those):
the same tests against that server, skipped when it cannot be reached. Without the variable the live
parameter does not exist, so a normal run collects nothing extra.
`live_fhir_server` is the same sandbox on its own (tests marked `live`).

Public sandboxes fail now and then (cds-hooks-checklist §6): a live test that fails because the server
answered 5xx or timed out, to the test helpers (FhirServerOutage, httpx.TransportError) or to the
service (its cds_fhir_fetch_errors moved during the test), is reported as skipped, not failed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import httpx
import pytest

from cds import metrics
from cds.settings import Settings
from tests.integration.service_support import service
from tests.support.fhir import (
    KINDS,
    FhirServer,
    FhirServerOutage,
    FhirServerUnavailable,
    live_server_from_env,
    reachable,
    run_fhir_server,
)

LIVE = live_server_from_env()
PARAMS = [*KINDS, *([pytest.param("live", marks=pytest.mark.live)] if LIVE else [])]
_SERVICE_ERRORS = ("timeout", "connect", "http-error")  # reasons a flaky server gives
_ERRORS_AT_START = pytest.StashKey[float]()


def _live() -> FhirServer:
    if LIVE is None:
        pytest.skip("CDS_TEST_FHIR_BASE is not set")
    why = reachable(LIVE.base_url, timeout=20.0)
    if why:
        pytest.skip(f"live FHIR server: {why}")
    return LIVE


@pytest.fixture(scope="session", params=PARAMS)
def fhir_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FhirServer]:
    kind: str = request.param
    if kind == "live":
        yield _live()
        return
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
    return _live()


# ---------------------------------------------------------------- live: a sandbox outage is a skip


def _service_fetch_errors() -> float:
    """FHIR reads of the in-process service that failed the way a flaky server makes them fail."""
    return sum(
        s.value
        for family in metrics.FHIR_FETCH_ERRORS.collect()
        for s in family.samples
        if s.name.endswith("_total") and s.labels.get("reason") in _SERVICE_ERRORS
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("live"):
        item.stash[_ERRORS_AT_START] = _service_fetch_errors()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed or call.excinfo is None or not item.get_closest_marker("live"):
        return
    exc = call.excinfo.value
    why = ""
    if isinstance(exc, FhirServerOutage | httpx.TransportError):
        why = f"{type(exc).__name__}: {str(exc)[:300]}"
    elif isinstance(exc, AssertionError) and _ERRORS_AT_START in item.stash:
        moved = _service_fetch_errors() - item.stash[_ERRORS_AT_START]
        if moved > 0:
            why = f"the service's reads failed {moved:.0f} times (timeout/connect/HTTP error) during the test"
    if why:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: live FHIR server failing: {why}")


# ---------------------------------------------------------------- the service on `fhir_server`


@pytest.fixture(scope="module")
def running(
    fhir_server: FhirServer, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Settings]]:
    """(url, settings) of the service allowed to call `fhir_server` and the test module's
    EXTRA_FHIR_ALLOW prefixes; one per test module and server."""
    extra: tuple[str, ...] = tuple(getattr(request.module, "EXTRA_FHIR_ALLOW", ()))
    with service(fhir_server, tmp_path_factory.mktemp("service-state"), *extra) as pair:
        yield pair
