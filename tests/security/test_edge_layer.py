"""The one-layer edge (cds.middleware.EdgeMiddleware) and the startup GC freeze, over real HTTP: every
answer, refusals included, carries nosniff, Vary and (for an allowed origin) the CORS header."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds import app as app_module
from cds.hooks import routes
from cds.middleware import SANDBOX_ORIGIN, json_depth_exceeds
from cds.settings import Settings
from tests.support.servers import serve_asgi

SELECT = "/cds-services/pml-plex-select"


def _settings(state_dir: Path) -> Settings:
    return Settings(_env_file=None, auth="off", state_dir=state_dir, cors_origins=[SANDBOX_ORIGIN])


def _hook_body(scenario: str | None = None) -> dict[str, Any]:
    from cds import demo

    names = demo.scenarios()
    patient = demo.patient(scenario if scenario in names else names[0], datetime.now(UTC))
    return demo.hook_request(patient, "order-select", prefetch=True, settings=Settings(_env_file=None))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_asgi(app_module.create_app(_settings(tmp_path_factory.mktemp("edge")))) as url:
        yield url


@pytest.mark.parametrize(
    "path, body, headers, status",
    [
        (SELECT, "demo", {}, 200),
        (SELECT, "demo", {"Origin": SANDBOX_ORIGIN}, 200),
        (SELECT, "demo", {"Origin": "https://evil.example"}, 200),
        ("/cds-services/no-such-service", "demo", {}, 404),
        (SELECT, b'{"hook": "order-select"}', {}, 400),  # not a hook request
        (SELECT, b"{not json", {}, 400),
        (
            "/cds-services/pml-plex-sign",
            "demo",
            {},
            200,
        ),  # order-select body: answered as order-sign (issue 17)
        (SELECT, b"[" * 65 + b"]" * 65, {"Origin": SANDBOX_ORIGIN}, 400),  # refused by the edge layer
    ],
)
def test_hook_answers_carry_the_edge_headers(
    base: str, path: str, body: bytes | str, headers: dict[str, str], status: int
) -> None:
    content = json.dumps(_hook_body()).encode() if body == "demo" else body
    assert isinstance(content, bytes)
    r = httpx.post(base + path, content=content, headers={"Content-Type": "application/json", **headers})
    assert r.status_code == status, r.text[:300]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["vary"] == "Origin"
    allowed = headers.get("Origin") == SANDBOX_ORIGIN
    assert r.headers.get("access-control-allow-origin") == (SANDBOX_ORIGIN if allowed else None)
    if status == 200:
        assert isinstance(r.json()["cards"], list)
    else:
        assert r.json()["resourceType"] == "OperationOutcome"


def test_trailing_slash_is_redirected_to_the_path_without_it(base: str) -> None:
    r = httpx.post(base + SELECT + "/", json=_hook_body())
    assert r.status_code == 307 and r.headers["location"] == SELECT


def test_unexpected_error_is_a_500_outcome_that_closes_the_connection(
    base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(routes, "_run", boom)
    r = httpx.post(base + SELECT, json=_hook_body(), timeout=10)
    assert r.status_code == 500 and r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["connection"] == "close"
    assert "boom" not in r.text


def test_edge_headers_match_starlette_cors(base: str) -> None:
    fast = base
    plain = httpx.get(fast + "/cds-services")
    assert plain.headers["vary"] == "Origin" and plain.headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in plain.headers
    r = httpx.post(
        fast + SELECT, content=b"x", headers={"Origin": SANDBOX_ORIGIN, "Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    assert r.headers["access-control-allow-origin"] == SANDBOX_ORIGIN
    assert r.headers["vary"] == "Origin" and r.headers["x-content-type-options"] == "nosniff"
    pre = httpx.options(
        fast + SELECT, headers={"Origin": SANDBOX_ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == SANDBOX_ORIGIN
    assert pre.headers["x-content-type-options"] == "nosniff"


def test_startup_freezes_the_heap(base: str) -> None:
    assert gc.get_freeze_count() > 10_000
    assert gc.get_threshold()[0] >= 10_000


@pytest.mark.parametrize(
    "body, deep",
    [
        (b"[" * 70, True),  # unclosed: as deep as it opens
        (b"[" * 65 + b"]", True),
        (b"]" + b"[]" * 100, False),
        (b'["' + b"]" * 70 + b'", ' + b"[" * 10 + b"]" * 10 + b"]", False),
        (b'[""' + b'"[' * 70 + b'"]' + b"", False),  # every bracket inside a string
        (b'[{"a":"x","b":"[["}' * 40 + b"]", False),
        (b'{"a":"\\\\"' + b"[" * 70 + b"]" * 70 + b"}", True),  # escaped backslash ends the string
        (b'{"a":"' + b'\\"[' * 70 + b'"}', False),
    ],
)
def test_depth_edge_cases(body: bytes, deep: bool) -> None:
    assert json_depth_exceeds(body, 64) is deep
