"""The demo routes against the real service, and every demo patient's card summaries (< 140 characters)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cds import demo as demo_data
from cds.settings import Settings
from tests.support.servers import serve_service


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    with (
        tempfile.TemporaryDirectory(prefix="cds-demo-") as state,
        serve_service(Settings(auth="off", demo=True, state_dir=Path(state))) as url,
    ):
        yield url


def services(url: str) -> dict[str, str]:
    disc = httpx.get(url + "/cds-services").json()
    return {s["hook"]: s["id"] for s in disc["services"]}


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_every_demo_patient_card_summary_under_140(demo_url: str, hook: str) -> None:
    sid = services(demo_url)[hook]
    seen = 0
    with httpx.Client(base_url=demo_url, timeout=10) as client:
        for name in demo_data.scenarios():
            req = client.get(f"/demo/request/{name}", params={"hook": hook})
            assert req.status_code == 200
            body = req.json()
            assert body["hook"] == hook and body["context"]["patientId"] == f"demo-{name}"
            assert body["prefetch"], "the demo page sends full prefetch"
            body["context"]["userId"] = f"Practitioner/{uuid.uuid4()}"  # no order-select before this sign
            r = client.post(f"/cds-services/{sid}", json=body)
            assert r.status_code == 200, (name, r.text[:300])
            cards = r.json()["cards"]
            expected = demo_data.patient(name, datetime.now(UTC)).expected["cards"]
            assert len(cards) == len(expected), name
            for c in cards:
                assert 0 < len(c["summary"]) < 140, (name, c["summary"])
                seen += 1
    assert seen >= 3 * 10


def test_page_and_assets(demo_url: str) -> None:
    r = httpx.get(demo_url + "/demo")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "object-src 'none'" in csp
    for name, kind in (("demo.js", "javascript"), ("demo.css", "text/css")):
        a = httpx.get(f"{demo_url}/demo/static/{name}")
        assert a.status_code == 200 and kind in a.headers["content-type"]
    assert httpx.get(demo_url + "/demo/static/..%2Fviews%2Fdemo.py").status_code == 404
    assert httpx.get(demo_url + "/demo/static/other.js").status_code == 404
    scen = httpx.get(demo_url + "/demo/scenarios").json()
    assert [s["name"] for s in scen] == demo_data.scenarios() and all(s["title"] for s in scen)


def test_request_errors(demo_url: str) -> None:
    assert httpx.get(demo_url + "/demo/request/nobody").status_code == 404
    assert (
        httpx.get(demo_url + "/demo/request/high-level", params={"hook": "patient-view"}).status_code == 400
    )


def test_demo_off_hides_the_page() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="cds-demo-off-") as state,
        serve_service(Settings(auth="off", demo=False, state_dir=Path(state))) as url,
    ):
        for path in ("/", "/demo", "/demo/static/demo.js", "/demo/request/high-level", "/demo/scenarios"):
            assert httpx.get(url + path).status_code == 404, path


def test_root_points_to_the_demo(demo_url: str) -> None:
    r = httpx.get(demo_url + "/")
    assert r.status_code == 307 and r.headers["location"] == "/demo"
