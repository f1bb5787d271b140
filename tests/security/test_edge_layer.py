"""The one-layer edge (cds.middleware.EdgeMiddleware), the hook fast path (cds.app.HookFastPath) and the
startup GC freeze: same answers as the layers they replace, over real HTTP."""

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
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(fast, slow): the service with the fast path, and one whose fast path is switched off."""
    fast_app = app_module.create_app(_settings(tmp_path_factory.mktemp("fast")))
    slow_app = app_module.create_app(_settings(tmp_path_factory.mktemp("slow")))
    slow_app.user_middleware = [m for m in slow_app.user_middleware if m.cls is not app_module.HookFastPath]
    with serve_asgi(fast_app) as fast, serve_asgi(slow_app) as slow:
        yield fast, slow


def _same(fast: httpx.Response, slow: httpx.Response) -> None:
    assert fast.status_code == slow.status_code, (fast.text, slow.text)
    drop = {"date", "content-length", "location"}
    assert {k: v for k, v in fast.headers.items() if k not in drop} == {
        k: v for k, v in slow.headers.items() if k not in drop
    }
    assert (
        httpx.URL(fast.headers.get("location", "")).path == httpx.URL(slow.headers.get("location", "")).path
    )
    if fast.headers.get("content-type", "").startswith("application/json"):
        a, b = fast.json(), slow.json()
        if isinstance(a, dict) and isinstance(b, dict) and "cards" in a:
            assert [c.get("summary") for c in a["cards"]] == [c.get("summary") for c in b["cards"]]
        else:
            assert a == b
    else:
        assert fast.content == slow.content


@pytest.mark.parametrize(
    "path, body, headers",
    [
        (SELECT, "demo", {}),
        (SELECT, "demo", {"Origin": SANDBOX_ORIGIN}),
        (SELECT, "demo", {"Origin": "https://evil.example"}),
        ("/cds-services/no-such-service", "demo", {}),
        (SELECT, b'{"hook": "order-select"}', {}),  # invalid hook request -> 400
        (SELECT, b"{not json", {}),
        ("/cds-services/pml-plex-sign", "demo", {}),  # order-select body: answered as order-sign (issue 17)
        (SELECT + "/", "demo", {}),  # not the fast path's shape: routed as before
        (SELECT, b"[" * 65 + b"]" * 65, {"Origin": SANDBOX_ORIGIN}),  # edge rejection
    ],
)
def test_fast_path_answers_as_the_router_does(
    both: tuple[str, str], path: str, body: bytes | str, headers: dict[str, str]
) -> None:
    content = json.dumps(_hook_body()).encode() if body == "demo" else body
    assert isinstance(content, bytes)
    send = {"Content-Type": "application/json", **headers}
    fast, slow = (httpx.post(base + path, content=content, headers=send, timeout=10) for base in both)
    _same(fast, slow)


def test_unexpected_error_is_a_500_outcome_on_both_paths(
    both: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(routes, "_run", boom)
    content = json.dumps(_hook_body()).encode()
    fast, slow = (
        httpx.post(base + SELECT, content=content, headers={"Content-Type": "application/json"}, timeout=10)
        for base in both
    )
    _same(fast, slow)
    assert fast.status_code == 500 and fast.json()["resourceType"] == "OperationOutcome"
    assert "boom" not in fast.text


def test_fast_path_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = app_module.HookFastPath._call_endpoint

    async def spy(self: Any, scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path_params"]["service_id"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(app_module.HookFastPath, "_call_endpoint", spy)
    with serve_asgi(app_module.create_app(_settings(tmp_path))) as base:
        r = httpx.post(base + SELECT, json=_hook_body(), timeout=10)
    assert r.status_code == 200 and calls == ["pml-plex-select"]


def test_edge_headers_match_starlette_cors(both: tuple[str, str]) -> None:
    fast, _ = both
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


def test_startup_freezes_the_heap(both: tuple[str, str]) -> None:
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
