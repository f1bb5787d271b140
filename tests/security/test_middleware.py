"""CORS and request hygiene over real HTTP: a tiny FastAPI app with cds.middleware.install, under uvicorn."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from cds.middleware import SANDBOX_ORIGIN, install, json_depth_exceeds
from cds.settings import Settings
from tests.support.servers import serve_asgi

LIMIT = 64 * 1024
PATHS = ["/cds-services", "/cds-services/pml-plex-select", "/cds-services/pml-plex-select/feedback"]


def tiny_app(settings: Settings) -> FastAPI:
    app = FastAPI()
    seen: list[int] = []

    @app.get("/cds-services")
    async def discovery() -> dict[str, Any]:
        return {"services": []}

    @app.post("/cds-services/{service_id}")
    async def service(service_id: str, request: Request) -> dict[str, Any]:
        body = await request.body()
        seen.append(len(body))
        return {"cards": [], "bytes": len(body)}

    @app.post("/cds-services/{service_id}/feedback")
    async def feedback(service_id: str, request: Request) -> dict[str, Any]:
        return {"n": len((await request.json())["feedback"])}

    install(app, settings)
    app.state.seen = seen
    return app


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    settings = Settings(_env_file=None, auth="off", cors_origins=[SANDBOX_ORIGIN], max_body_bytes=LIMIT)
    with serve_asgi(tiny_app(settings)) as url:
        yield url


def assert_outcome(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code


@pytest.mark.parametrize("path", PATHS)
def test_preflight_is_answered_for_the_sandbox_origin(base: str, path: str) -> None:
    r = httpx.options(
        base + path,
        headers={
            "Origin": SANDBOX_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == SANDBOX_ORIGIN
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert {m.strip() for m in r.headers["access-control-allow-methods"].split(",")} >= {
        "GET",
        "POST",
        "OPTIONS",
    }
    assert "access-control-allow-credentials" not in r.headers


def test_preflight_from_an_unknown_origin_gets_no_allow_origin(base: str) -> None:
    r = httpx.options(
        base + PATHS[1], headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers


def test_simple_request_carries_the_allowed_origin(base: str) -> None:
    r = httpx.get(base + "/cds-services", headers={"Origin": SANDBOX_ORIGIN})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == SANDBOX_ORIGIN
    assert r.headers["x-content-type-options"] == "nosniff"


def test_wildcard_origin_never_allows_credentials() -> None:
    settings = Settings(_env_file=None, auth="off", cors_origins=["*"])
    with serve_asgi(tiny_app(settings)) as url:
        r = httpx.options(
            url + PATHS[0], headers={"Origin": "https://any.example", "Access-Control-Request-Method": "GET"}
        )
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/JSON;charset=UTF-8",
        "application/fhir+json",
    ],
)
def test_json_content_types_pass(base: str, content_type: str) -> None:
    r = httpx.post(
        base + PATHS[1], content=b'{"hook": "order-select"}', headers={"Content-Type": content_type}
    )
    assert r.status_code == 200 and r.json()["bytes"] == 24


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "text/json",
        "application/jsonx",
    ],
)
def test_other_content_types_get_415(base: str, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(base + PATHS[1], content=b'{"hook": "order-select"}', headers=headers)
    if content_type is None:  # httpx sends no Content-Type for raw bytes
        assert "content-type" not in r.request.headers
    assert_outcome(r, 415, "not-supported")


def test_body_over_the_limit_by_content_length_gets_413(base: str) -> None:
    r = httpx.post(
        base + PATHS[1], content=b"[" + b" " * LIMIT + b"]", headers={"Content-Type": "application/json"}
    )
    assert_outcome(r, 413, "too-costly")


def test_streamed_body_over_the_limit_gets_413(base: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"pad": "'
        for _ in range(LIMIT // 1024 + 8):
            yield b"x" * 1024
        yield b'"}'

    r = httpx.post(base + PATHS[1], content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers  # chunked: only counting can catch it
    assert_outcome(r, 413, "too-costly")


def test_lying_content_length_is_not_trusted(base: str) -> None:
    """Declares a small body, then sends more: the server reads only what was declared."""
    host, port = base.removeprefix("http://").split(":")
    body = b'{"a": 1}' + b" " * (LIMIT * 2)
    head = (
        f"POST {PATHS[1]} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 8\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(head + body[:4096])
        reply = b""
        while chunk := s.recv(4096):  # Connection: close, so read to the end
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")
    assert b'"bytes":8' in reply


def test_body_just_under_the_limit_passes(base: str) -> None:
    body = b'{"pad": "' + b"x" * (LIMIT - 12) + b'"}'
    assert len(body) <= LIMIT
    r = httpx.post(base + PATHS[1], content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["bytes"] == len(body)


def test_deep_json_gets_400(base: str) -> None:
    deep = b'{"a":' * 65 + b"1" + b"}" * 65
    r = httpx.post(base + PATHS[1], content=deep, headers={"Content-Type": "application/json"})
    assert_outcome(r, 400, "invalid")
    ok = b"[" * 64 + b"]" * 64
    assert (
        httpx.post(base + PATHS[1], content=ok, headers={"Content-Type": "application/json"}).status_code
        == 200
    )


def test_feedback_route_reads_the_replayed_body(base: str) -> None:
    r = httpx.post(base + PATHS[2], json={"feedback": [{"card": "x"}, {"card": "y"}]})
    assert r.status_code == 200 and r.json() == {"n": 2}


@pytest.mark.parametrize(
    "body, deep",
    [
        (b"[" * 64 + b"]" * 64, False),
        (b"[" * 65 + b"]" * 65, True),
        (b'{"a": "' + b"[" * 500 + b'"}', False),  # brackets inside strings do not count
        (b'{"a": "\\"' + b"{" * 500 + b'"}', False),  # nor after an escaped quote
        (b"[]" * 10_000, False),
        (b"[" * 100_000, True),
    ],
)
def test_depth_scanner(body: bytes, deep: bool) -> None:
    assert json_depth_exceeds(body, 64) is deep
