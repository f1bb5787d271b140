"""Issue 18 defect 4: a `link[next]` with encoded dot segments (`…/fhir/%2e%2e/other-tenant/…`) looks
inside the FHIR base until the server decodes it. The token must never go there: the base check runs on
the URL as a decoding server reads it (`%2e` decoded, dot segments resolved).

The real service over HTTP, a real FHIR server on loopback that records every request it gets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cds import demo
from cds.outbound import same_base
from cds.settings import Settings
from tests.support.servers import serve_asgi, serve_service

SELECT = "/cds-services/pml-plex-select"
TOKEN = "fhir-token-must-stay-in-tenant-a"
ESCAPES = [
    "%2e%2e/other-tenant/Observation?page=2",
    "%2E%2E/%2e%2e/other-tenant/fhir/Observation?page=2",
    "Observation/%2e%2e/%2e%2e/%2e%2e/other-tenant/Observation",
    ".%2e/other-tenant/Observation",
    "%2e%2e%2fother-tenant/Observation",
    "%252e%252e/other-tenant/Observation",
]


class Recorder:
    """/tenant-a/fhir/{type}: a searchset whose next link is `escape`; records (raw path, token?)."""

    def __init__(self, escape: str) -> None:
        self.escape = escape
        self.seen: list[tuple[str, bool]] = []
        self.base = ""

    def app(self) -> Starlette:
        async def any_path(request: Request) -> JSONResponse:
            raw = request.scope["raw_path"].decode()
            self.seen.append((raw, TOKEN in request.headers.get("authorization", "")))
            rtype = raw.rstrip("/").rsplit("/", 1)[-1]
            link = [{"relation": "next", "url": f"{self.base}/tenant-a/fhir/{self.escape}"}]
            return JSONResponse(
                {"resourceType": "Bundle", "type": "searchset", "entry": [], "link": link}
                if rtype != "Patient"
                else {"resourceType": "OperationOutcome"},
                status_code=200,
            )

        return Starlette(routes=[Route("/{rest:path}", any_path)])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(auth="off", state_dir=tmp_path_factory.mktemp("next"), _env_file=None)  # type: ignore[call-arg]
    with serve_service(settings) as base:
        yield base


def _hook_body(fhir_base: str, escape: str) -> dict[str, Any]:
    patient = demo.patient("high-level", datetime.now(UTC))
    body: dict[str, Any] = demo.hook_request(
        patient, "order-select", prefetch=True, settings=Settings(_env_file=None)
    )  # type: ignore[call-arg]
    body["fhirServer"] = fhir_base
    body["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds-service",
    }
    body["prefetch"].pop("labs")  # read from the server: its next link is the escape
    statements = body["prefetch"]["medicationStatements"]  # a prefetched Bundle whose next link escapes
    statements["link"] = [{"relation": "next", "url": f"{fhir_base}/{escape}"}]
    return body


@pytest.mark.parametrize("escape", ESCAPES)
def test_token_never_leaves_the_base_through_encoded_dots(service: str, escape: str) -> None:
    recorder = Recorder(escape)
    with serve_asgi(recorder.app()) as fhir:
        recorder.base = fhir
        resp = httpx.post(service + SELECT, json=_hook_body(f"{fhir}/tenant-a/fhir", escape), timeout=20)
    assert resp.status_code == 200, resp.text
    assert recorder.seen, "the service read nothing from the FHIR server"
    with_token = [path for path, token in recorder.seen if token]
    assert with_token
    for path in with_token:
        assert path.startswith("/tenant-a/fhir/"), path
        assert "%2e" not in path.lower() and "%25" not in path and "/.." not in path, path


def test_dot_segments_inside_the_base_are_still_followed() -> None:
    base = "https://ehr.example/tenant-a/fhir"
    assert same_base(f"{base}/Observation/%2e%2e/Observation?page=2", base)
    assert same_base(f"{base}/Observation?page=%2e%2e", base)  # the query is not a path
    assert not same_base(f"{base}/%2e%2e/other-tenant/Observation", base)
    assert not same_base(f"{base}/%2e%2e", base)
