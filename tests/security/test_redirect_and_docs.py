"""Issue 18 defect 11, over real HTTP: the trailing-slash redirect never names a host taken from the
request, and /docs and /openapi.json are served only when CDS_API_DOCS is on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from cds.settings import Settings
from tests.support.servers import serve_service


def _settings(tmp: Path, **kw: object) -> Settings:
    return Settings(auth="off", state_dir=tmp, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_service(_settings(tmp_path_factory.mktemp("redirect"))) as url:
        yield url


@pytest.mark.parametrize("path", ["/cds-services/", "/cds-services/?x=1", "/healthz/"])
def test_trailing_slash_redirect_does_not_reflect_the_host_header(base: str, path: str) -> None:
    resp = httpx.get(base + path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert resp.status_code in (307, 404), resp.status_code
    if resp.status_code == 307:
        location = resp.headers["location"]
        assert "evil.example" not in location
        parts = urlsplit(location)
        assert not parts.scheme and not parts.netloc and location.startswith("/")
        assert parts.path == path.split("?")[0].rstrip("/")


def test_redirect_is_followed_to_the_service_itself(base: str) -> None:
    resp = httpx.get(base + "/cds-services/", headers={"Host": "evil.example"}, follow_redirects=True)
    assert resp.status_code == 200
    assert resp.json()["services"]
    assert resp.url.host == "127.0.0.1"


@pytest.mark.parametrize("path", ["//evil.example/", "//evil.example/cds-services/", "/nothing-here/"])
def test_no_redirect_off_the_site(base: str, path: str) -> None:
    with httpx.Client(follow_redirects=False) as client:
        request = client.build_request("GET", base)
        request.url = request.url.copy_with(raw_path=path.encode())
        resp = client.send(request)
    assert resp.status_code == 404
    assert "location" not in resp.headers


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/redoc"])
def test_api_docs_are_off_by_default(base: str, path: str) -> None:
    assert httpx.get(base + path).status_code == 404


def test_api_docs_on_when_asked(tmp_path: Path) -> None:
    with serve_service(_settings(tmp_path, api_docs=True)) as url:
        assert httpx.get(url + "/docs").status_code == 200
        spec = httpx.get(url + "/openapi.json")
        assert spec.status_code == 200 and "/cds-services" in spec.json()["paths"]
