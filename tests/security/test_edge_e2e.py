"""The real service over real HTTP: JWT on all three endpoints, what stays outside JWT, CORS, hygiene,
and SSRF (a disallowed fhirServer, a redirect and a link-next to another host never reach it).

The service runs under uvicorn (tests.support.servers.serve_service) with ES384/RS384 keys served by a
loopback JWKS server; `public_base_url` is a made-up https URL, as behind a TLS proxy, so `aud` must be
built from it and not from the Host header.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from cds import fhir_io
from cds.middleware import SANDBOX_ORIGIN
from cds.settings import IssuerConfig, Settings
from tests.support.jwks import DROP, JwksServer, SigningKey, issuer_settings
from tests.support.servers import free_port, serve_asgi, serve_service
from tests.support.tripwire import Tripwire
from tests.support.tripwire import tripwire as listen_tripwire

pytestmark = pytest.mark.skipif(
    not hasattr(fhir_io, "FhirReader"), reason="the service is not complete yet (cds.fhir_io.FhirReader)"
)

ISS = "https://ehr.example.org"
PUBLIC = "https://cds.example.org"
SELECT = "/cds-services/pml-plex-select"
ENDPOINTS = {"discovery": "/cds-services", "service": SELECT, "feedback": f"{SELECT}/feedback"}
EHR_TOKEN = "ehr-access-token-" + uuid.uuid4().hex  # the fhirAuthorization token, must reach only fhirServer


def hostile_fhir_app(patient: Any, tripwire: Tripwire) -> Starlette:
    """/redirect/...: every read answers 302 to the tripwire. /next/...: real first pages, next -> tripwire."""
    seen: list[str] = []

    async def redirect(request: Request) -> Response:
        seen.append(request.url.path)
        return RedirectResponse(
            f"{tripwire.url}/{request.path_params['rest']}?{request.url.query}", status_code=302
        )

    async def paged(request: Request) -> Response:
        seen.append(request.url.path)
        rest: str = request.path_params["rest"]
        rtype = rest.split("/")[0]
        matching = [r for r in patient.resources if r.get("resourceType") == rtype]
        if "/" in rest:  # a read: Patient/{id}
            return JSONResponse(
                matching[0] if matching else {"resourceType": "OperationOutcome"},
                status_code=200 if matching else 404,
            )
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [{"relation": "next", "url": f"{tripwire.url}/{rtype}?page=2&{request.url.query}"}],
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in matching],
        }
        return JSONResponse(bundle)

    app = Starlette(routes=[Route("/redirect/{rest:path}", redirect), Route("/next/{rest:path}", paged)])
    app.state.seen = seen
    return app


@pytest.fixture(scope="module")
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def patient(now: datetime) -> Any:
    from cds import demo

    return demo.patient("high-level" if "high-level" in demo.scenarios() else demo.scenarios()[0], now)


@pytest.fixture(scope="module")
def keys() -> Iterator[JwksServer]:
    server = JwksServer()
    server.add_key("ehr", "ES384")
    server.add_key("ehr", "RS384")
    with server.serve():
        yield server


@pytest.fixture(scope="module")
def tripwire() -> Iterator[Tripwire]:
    """On another loopback address (127.0.0.2), so only a call to another host reaches it."""
    with listen_tripwire("127.0.0.2") as t:
        yield t


@pytest.fixture(scope="module")
def hostile_fhir(patient: Any, tripwire: Tripwire) -> Iterator[tuple[str, Starlette]]:
    app = hostile_fhir_app(patient, tripwire)
    with serve_asgi(app) as base:
        yield base, app


@pytest.fixture(scope="module")
def service(
    keys: JwksServer, hostile_fhir: tuple[str, Starlette], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    fhir_base, _ = hostile_fhir
    settings = issuer_settings(
        ISS,
        public_base_url=PUBLIC,
        cors_origins=[SANDBOX_ORIGIN],
        state_dir=tmp_path_factory.mktemp("edge-state"),
        max_body_bytes=256 * 1024,
        issuer=IssuerConfig(
            jwks_url=keys.url("ehr"), allowed_jku=[keys.url("ehr")], fhir_servers=[fhir_base + "/"]
        ),
    )
    with serve_service(settings) as base:
        yield base


def token(keys: JwksServer, path: str, alg: str = "ES384", **kw: Any) -> str:
    key = keys.keysets["ehr"][0 if alg == "ES384" else 1]
    return key.token(iss=ISS, aud=PUBLIC + path, jku=keys.url("ehr"), **kw)


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def call(base: str, name: str, headers: dict[str, str], body: Any = None) -> httpx.Response:
    if name == "discovery":
        return httpx.get(base + ENDPOINTS[name], headers=headers, timeout=10)
    return httpx.post(base + ENDPOINTS[name], headers=headers, json=body, timeout=10)


def body_for(name: str, patient: Any) -> Any:
    from cds import demo

    if name == "service":
        return demo.hook_request(patient, "order-select")
    if name == "feedback":
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": stamp}]}
    return None


# ---------------------------------------------------------------- JWT on every endpoint


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_valid_token_is_accepted(service: str, keys: JwksServer, patient: Any, name: str, alg: str) -> None:
    r = call(service, name, auth(token(keys, ENDPOINTS[name], alg)), body_for(name, patient))
    assert r.status_code == 200, r.text
    if name == "discovery":
        assert r.json()["services"]
    if name == "service":
        assert "cards" in r.json()


FAILURES = {
    "missing header": lambda k, p: {},
    "alg none": lambda k, p: auth(
        jwt.encode(
            {
                "iss": ISS,
                "aud": PUBLIC + p,
                "iat": int(time.time()),
                "exp": int(time.time()) + 60,
                "jti": "n",
            },
            None,
            algorithm="none",
            headers={"kid": k.keysets["ehr"][0].kid},
        )
    ),
    "unknown kid": lambda k, p: auth(SigningKey.generate("ES384").token(iss=ISS, aud=PUBLIC + p)),
    "iss not allowlisted": lambda k, p: auth(
        k.keysets["ehr"][0].token(iss="https://evil.example", aud=PUBLIC + p)
    ),
    "aud of another endpoint": lambda k, p: auth(token(k, "/cds-services/other")),
    "aud of the socket address, not the public URL": lambda k, p: auth(
        k.keysets["ehr"][0].token(iss=ISS, aud="http://127.0.0.1" + p)
    ),
    "expired": lambda k, p: auth(token(k, p, now=time.time() - 3600)),
    "jti missing": lambda k, p: auth(token(k, p, jti=DROP)),
}


@pytest.mark.parametrize("case", list(FAILURES))
@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_invalid_token_gets_a_bare_401(
    service: str, keys: JwksServer, patient: Any, name: str, case: str
) -> None:
    r = call(service, name, FAILURES[case](keys, ENDPOINTS[name]), body_for(name, patient))
    assert r.status_code == 401
    assert r.content == b"", "no detail leaves the service"


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_replayed_token_gets_401(service: str, keys: JwksServer, patient: Any, name: str) -> None:
    headers = auth(token(keys, ENDPOINTS[name]))
    assert call(service, name, headers, body_for(name, patient)).status_code == 200
    r = call(service, name, headers, body_for(name, patient))
    assert r.status_code == 401 and r.content == b""


def test_bad_body_without_token_learns_nothing(service: str) -> None:
    r = httpx.post(service + SELECT, json={"hook": "nonsense"})
    assert r.status_code == 401 and r.content == b""


# ---------------------------------------------------------------- outside JWT


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_needs_no_token(service: str, path: str) -> None:
    assert httpx.get(service + path).status_code == 200


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_preflight_needs_no_token(service: str, name: str) -> None:
    r = httpx.options(
        service + ENDPOINTS[name],
        headers={
            "Origin": SANDBOX_ORIGIN,
            "Access-Control-Request-Method": "POST" if name != "discovery" else "GET",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == SANDBOX_ORIGIN
    assert {"authorization", "content-type"} <= {
        h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")
    }
    assert {"GET", "POST", "OPTIONS"} <= {
        m.strip() for m in r.headers["access-control-allow-methods"].split(",")
    }


def test_401_carries_cors_headers_for_the_browser(service: str) -> None:
    r = httpx.get(service + "/cds-services", headers={"Origin": SANDBOX_ORIGIN})
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == SANDBOX_ORIGIN


# ---------------------------------------------------------------- request hygiene through the service


def test_hygiene_answers_with_operation_outcomes(service: str, keys: JwksServer) -> None:
    cases = [
        ({"content": b"{}", "headers": {"Content-Type": "text/plain"}}, 415),
        (
            {"content": b"[" + b" " * (300 * 1024) + b"]", "headers": {"Content-Type": "application/json"}},
            413,
        ),
        ({"content": b"[" * 100 + b"]" * 100, "headers": {"Content-Type": "application/json"}}, 400),
    ]
    for kwargs, status in cases:
        kwargs["headers"].update(auth(token(keys, SELECT)))
        r = httpx.post(service + SELECT, **kwargs)
        assert r.status_code == status
        assert r.json()["resourceType"] == "OperationOutcome"


# ---------------------------------------------------------------- SSRF


def test_fhir_server_off_the_allowlist_is_never_called(
    service: str, keys: JwksServer, patient: Any, tripwire: Tripwire
) -> None:
    from cds import demo

    before = tripwire.connections
    body = demo.hook_request(
        patient, "order-select", prefetch=False, fhir_server=tripwire.url, token=EHR_TOKEN
    )
    r = httpx.post(service + SELECT, json=body, headers=auth(token(keys, SELECT)), timeout=10)
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"
    assert tripwire.connections == before
    assert EHR_TOKEN.encode() not in tripwire.received


@pytest.mark.parametrize("trick", ["redirect", "next"])
def test_redirects_and_next_links_to_another_host_are_not_followed(
    service: str,
    keys: JwksServer,
    patient: Any,
    tripwire: Tripwire,
    hostile_fhir: tuple[str, Starlette],
    trick: str,
) -> None:
    from cds import demo

    fhir_base, app = hostile_fhir
    before_seen = len(app.state.seen)
    before = tripwire.connections
    body = demo.hook_request(
        patient, "order-select", prefetch=False, fhir_server=f"{fhir_base}/{trick}", token=EHR_TOKEN
    )
    r = httpx.post(service + SELECT, json=body, headers=auth(token(keys, SELECT)), timeout=10)
    assert r.status_code in (200, 412), r.text
    assert len(app.state.seen) > before_seen, "the allowlisted FHIR server was called"
    time.sleep(0.3)
    assert tripwire.connections == before, f"the service followed a {trick} to another host"
    assert EHR_TOKEN.encode() not in tripwire.received


def test_auth_off_does_not_open_the_allowlist(patient: Any, tripwire: Tripwire, tmp_path: Any) -> None:
    """CDS_AUTH=off with an allowlist: a fhirServer outside it is still refused, and never called."""
    from cds import demo

    settings = Settings(
        _env_file=None,
        auth="off",
        state_dir=tmp_path,
        fhir_server_allowlist=[f"http://127.0.0.1:{free_port()}/fhir"],
    )
    with serve_service(settings) as base:
        body = demo.hook_request(
            patient, "order-select", prefetch=False, fhir_server=tripwire.url, token=EHR_TOKEN
        )
        before = tripwire.connections
        r = httpx.post(base + SELECT, json=body, timeout=10)
        assert r.status_code == 412
        assert tripwire.connections == before


def test_tripwire_sees_a_call_when_the_address_is_allowed(
    patient: Any, tripwire: Tripwire, tmp_path: Any
) -> None:
    """Control: with CDS_AUTH=off and no allowlist, loopback 127.0.0.2 is allowed, and the tripwire sees it."""
    from cds import demo

    with serve_service(Settings(_env_file=None, auth="off", state_dir=tmp_path)) as base:
        body = demo.hook_request(
            patient, "order-select", prefetch=False, fhir_server=tripwire.url, token=EHR_TOKEN
        )
        before = tripwire.connections
        httpx.post(base + SELECT, json=body, timeout=10)
        time.sleep(0.3)
        assert tripwire.connections > before
