"""Issue 18 defect 8: a resourceType that is a list or an object (in prefetch or from the FHIR server)
is an unusable entry, skipped and counted; the call answers 200 with cards, never 500.

The real service over HTTP; the FHIR server is a real one on loopback answering such bodies."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cds import demo
from cds.settings import Settings
from tests.support.servers import serve_asgi, serve_service

SELECT = "/cds-services/pml-plex-select"
BAD_TYPES: list[Any] = [["Observation"], {"text": "Observation"}, [], {}]
NOW = datetime.now(UTC)


def _settings(tmp: Path) -> Settings:
    return Settings(auth="off", state_dir=tmp, allow_open_fhir=True, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_service(_settings(tmp_path_factory.mktemp("types"))) as url:
        yield url


def _body() -> dict[str, Any]:
    patient = demo.patient("high-level", NOW)
    return demo.hook_request(patient, "order-select", prefetch=True, settings=Settings(_env_file=None))  # type: ignore[call-arg]


def _cases() -> Iterator[tuple[str, dict[str, Any]]]:
    body = _body()
    for key, value in body["prefetch"].items():
        for bad in BAD_TYPES:
            if isinstance(value, dict) and value.get("resourceType") == "Bundle" and value.get("entry"):
                changed = copy.deepcopy(body)
                changed["prefetch"][key]["entry"][0]["resource"]["resourceType"] = bad
                yield f"{key}.entry.resource.resourceType={bad!r}", changed
            changed = copy.deepcopy(body)
            changed["prefetch"][key]["resourceType"] = bad
            yield f"{key}.resourceType={bad!r}", changed


def test_bad_resource_types_in_prefetch_never_answer_500(base: str) -> None:
    answers: dict[str, int] = {}
    with httpx.Client(timeout=20) as client:
        for name, body in _cases():
            answers[name] = client.post(base + SELECT, json=body).status_code
    assert len(answers) >= 30
    assert all(code == 200 for code in answers.values()), {n: c for n, c in answers.items() if c != 200}


def fhir_app(bad: Any) -> Starlette:
    """Answers every search with a Bundle whose first entry has a bad resourceType, and every read
    (and the `/whole/` base) with a body whose own resourceType is bad."""

    async def search(request: Request) -> JSONResponse:
        rest = request.path_params["rest"]
        if request.path_params["mode"] == "whole":
            return JSONResponse({"resourceType": bad, "id": "x"})
        rtype = rest.split("/")[0]
        return JSONResponse(
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [
                    {"resource": {"resourceType": bad, "id": "1"}},
                    {"resource": {"resourceType": rtype}},
                ],
            }
        )

    return Starlette(routes=[Route("/{mode}/{rest:path}", search)])


@pytest.mark.parametrize("bad", BAD_TYPES, ids=repr)
@pytest.mark.parametrize("mode", ["entry", "whole"])
def test_bad_resource_types_from_the_fhir_server_never_answer_500(base: str, bad: Any, mode: str) -> None:
    body = _body()
    with serve_asgi(fhir_app(bad)) as fhir:
        body["fhirServer"] = f"{fhir}/{mode}"
        body.pop("fhirAuthorization", None)
        body["prefetch"] = {"patient": body["prefetch"]["patient"]}  # everything else is read from the server
        resp = httpx.post(base + SELECT, json=body, timeout=20)
    assert resp.status_code in (200, 412), resp.text
