"""The CDS Hooks HTTP surface over real HTTP (uvicorn, free port, CDS_AUTH=off): checklist P0 1-8, 10, 13."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds import demo
from cds.settings import Settings
from tests.hooks.checks import assert_no_empty_response, check_response, ext, kinds
from tests.support.tripwire import tripwire

SELECT = "/cds-services/pml-plex-select"
SIGN = "/cds-services/pml-plex-sign"


def request(
    name: str, hook: str = "order-select", settings: Settings | None = None, **kw: Any
) -> dict[str, Any]:
    """A demo request by a clinician of its own: an order-sign here never follows an order-select
    (tests/hooks/test_cards_http.py tests what order-sign leaves out after one)."""
    body = demo.hook_request(demo.patient(name, datetime.now(UTC)), hook, settings=settings, **kw)  # type: ignore[arg-type]
    body["context"]["userId"] = f"Practitioner/{uuid.uuid4()}"
    return body


def assert_outcome(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error"
    assert "Traceback" not in r.text
    return body


# ---------------------------------------------------------------- discovery (P0 1, 2)


def test_discovery(client: httpx.Client, settings: Settings) -> None:
    r = client.get("/cds-services")
    assert r.status_code == 200
    body = r.json()
    assert not [k for k in body if k != "services"]
    services = body["services"]
    assert {s["hook"] for s in services} == {"order-select", "order-sign"}
    assert len({s["id"] for s in services}) == 2
    for s in services:
        assert s["description"] and s["title"] and s["usageRequirements"] and s["prefetch"]
        assert s["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        assert all("sort:desc" not in t for t in s["prefetch"].values())
        for template in s["prefetch"].values():
            assert "{{context.patientId}}" in template
    from tests.hooks.checks import empties

    assert not empties(body)


def test_each_listed_service_answers(client: httpx.Client, settings: Settings) -> None:
    for s in client.get("/cds-services").json()["services"]:
        r = client.post(f"/cds-services/{s['id']}", json=request("non-plex-order", s["hook"], settings))
        assert r.status_code == 200 and r.json() == {"cards": []}


# ---------------------------------------------------------------- cards (P0 3-7)


@pytest.mark.parametrize(("path", "hook"), [(SELECT, "order-select"), (SIGN, "order-sign")])
def test_plex_order_gives_three_cards(client: httpx.Client, settings: Settings, path: str, hook: str) -> None:
    r = client.post(path, json=request("high-level", hook, settings))
    assert r.status_code == 200, r.text
    body = r.json()
    check_response(body)
    assert kinds(body) == ["plex-estimate", "iris", "dmt"]


@pytest.mark.parametrize("name", demo.scenarios())
def test_every_demo_patient_follows_the_card_rules(
    client: httpx.Client, settings: Settings, name: str
) -> None:
    r = client.post(SELECT, json=request(name, "order-select", settings))
    assert r.status_code == 200, r.text
    check_response(r.json())
    expected = demo.patient(name, datetime.now(UTC)).expected
    assert sorted(kinds(r.json())) == sorted(expected["cards"])  # most severe first: test_cards_http.py


def test_no_trigger_answers_empty_without_fhir_calls(client: httpx.Client, settings: Settings) -> None:
    with tripwire() as wire:
        for name in ("non-plex-order",):
            body = request(
                name, "order-select", settings, prefetch=False, fhir_server=wire.url, token="t0k3n"
            )
            r = client.post(SELECT, json=body)
            assert r.status_code == 200 and r.json() == {"cards": []}
        body = request(
            "high-level", "order-select", settings, prefetch=False, fhir_server=wire.url, token="t0k3n"
        )
        body["context"]["selections"] = ["ServiceRequest/not-in-the-bundle"]
        r = client.post(SELECT, json=body)
        assert r.status_code == 200 and r.json() == {"cards": []}
    assert wire.connections == 0


def test_plex_without_natalizumab_is_silent(client: httpx.Client, settings: Settings) -> None:
    r = client.post(SIGN, json=request("no-natalizumab", "order-sign", settings))
    assert r.status_code == 200 and r.json() == {"cards": []}


# ---------------------------------------------------------------- tolerance (P0 10)


def test_tolerant_input(client: httpx.Client, settings: Settings) -> None:
    body = request("high-level", "order-sign", settings)
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    assert "type" not in body["context"]["draftOrders"]  # as the CDS Hooks Sandbox sends it
    order["status"] = "active"  # re-signed, non-draft order
    body["context"]["futureContextKey"] = {"anything": [1, 2]}
    body["context"]["encounterId"] = "enc-1"
    body["someTopLevelExtra"] = True
    body["fhirAuthorization"] = {"access_token": "x"}  # only the token; fhirServer absent
    body["context"]["draftOrders"]["entry"].append(
        {"resource": {"resourceType": "NutritionOrder", "id": "n1", "status": "draft", "intent": "order"}}
    )
    r = client.post(SIGN, json=body)
    assert r.status_code == 200, r.text
    assert kinds(r.json()) == ["plex-estimate", "iris", "dmt"]


def test_selections_with_full_url_and_order_sign_without_selections(
    client: httpx.Client, settings: Settings
) -> None:
    body = request("high-level", "order-sign", settings)
    assert "selections" not in body["context"]
    assert client.post(SIGN, json=body).json()["cards"]


# ---------------------------------------------------------------- errors (P0 13)


def _valid(settings: Settings) -> dict[str, Any]:
    return request("high-level", "order-select", settings)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b.pop("hook"), id="no-hook"),
        pytest.param(lambda b: b.pop("hookInstance"), id="no-hookInstance"),
        pytest.param(lambda b: b.pop("context"), id="no-context"),
        pytest.param(lambda b: b["context"].pop("patientId"), id="no-patientId"),
        pytest.param(lambda b: b.update(hook="order-dispatch"), id="hook-mismatch"),
        pytest.param(lambda b: b.update(hook="patient-view"), id="other-hook"),
        pytest.param(lambda b: b["context"].update(draftOrders=[]), id="draftOrders-list"),
        pytest.param(
            lambda b: b["context"].update(draftOrders={"resourceType": "ServiceRequest"}),
            id="draftOrders-not-bundle",
        ),
        pytest.param(lambda b: b["context"].pop("draftOrders"), id="no-draftOrders"),
        pytest.param(lambda b: b.update(context="x"), id="context-string"),
        pytest.param(lambda b: b.update(hookInstance=5), id="hookInstance-number"),
    ],
)
def test_bad_requests_give_400_operation_outcome(
    client: httpx.Client, settings: Settings, mutate: Any
) -> None:
    body = _valid(settings)
    mutate(body)
    assert_outcome(client.post(SELECT, json=body), 400)


@pytest.mark.parametrize(
    "raw", [b"{", b"not json", b"[]", b"null", b'{"hook": "order-select"', '{"a": "\xff"}'.encode("latin-1")]
)
def test_malformed_json_gives_400(client: httpx.Client, raw: bytes) -> None:
    assert_outcome(client.post(SELECT, content=raw, headers={"Content-Type": "application/json"}), 400)


def test_unknown_service_404(client: httpx.Client, settings: Settings) -> None:
    assert_outcome(client.post("/cds-services/nope", json=_valid(settings)), 404)
    assert_outcome(client.post("/cds-services/nope/feedback", json={"feedback": []}), 404)
    assert_outcome(client.get("/no-such-path"), 404)


def test_body_over_limit_413(client: httpx.Client) -> None:
    big = b'{"hook": "order-select", "pad": "' + b"x" * (5 * 1024 * 1024 + 10) + b'"}'
    r = client.post(SELECT, content=big, headers={"Content-Type": "application/json"})
    assert_outcome(r, 413)


def test_wrong_method_is_an_operation_outcome(client: httpx.Client) -> None:
    assert_outcome(client.get(SELECT), 405)


# ---------------------------------------------------------------- prefetch oddities never 500 (P0 8; full matrix in integration)


@pytest.mark.parametrize(
    "prefetch",
    [
        pytest.param("not-an-object", id="string"),
        pytest.param({"labs": 5, "patient": [], "conditions": "x"}, id="wrong-types"),
        pytest.param(
            {"labs": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation"}}, 7]}},
            id="malformed-entries",
        ),
    ],
)
def test_odd_prefetch_never_500(client: httpx.Client, settings: Settings, prefetch: Any) -> None:
    body = _valid(settings)
    good = body["prefetch"]
    body["prefetch"] = prefetch if not isinstance(prefetch, dict) else {**good, **prefetch}
    r = client.post(SELECT, json=body)
    assert r.status_code in (200, 412), r.text
    if r.status_code == 200:
        check_response(r.json())
    else:
        assert_outcome(r, 412)


def test_no_prefetch_no_fhir_server_is_412(client: httpx.Client, settings: Settings) -> None:
    body = request("high-level", "order-select", settings, prefetch=False)
    assert_outcome(client.post(SELECT, json=body), 412)


def test_disallowed_fhir_server_never_called(client: httpx.Client, settings: Settings) -> None:
    with tripwire() as wire:
        body = request(
            "high-level",
            "order-select",
            settings,
            prefetch=False,
            fhir_server=wire.url.replace("127.0.0.1", "localhost") + "/x",
            token="tok",
        )
        body["fhirServer"] = "https://fhir.example.org/r4"  # not allowlisted
        assert_outcome(client.post(SELECT, json=body), 412)
        # complete prefetch: a disallowed fhirServer is simply not needed
        body = request(
            "high-level", "order-select", settings, fhir_server="https://fhir.example.org/r4", token="tok"
        )
        r = client.post(SELECT, json=body)
        assert r.status_code == 200, r.text
    assert wire.connections == 0


# ---------------------------------------------------------------- health, audit


def test_health(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_audit_event_without_phi(client: httpx.Client, settings: Settings, state_dir: Path) -> None:
    body = _valid(settings)
    hook_instance = body["hookInstance"] = str(uuid.uuid4())
    assert client.post(SELECT, json=body).status_code == 200
    import time

    deadline = time.monotonic() + 5
    rows: list[str] = []
    while time.monotonic() < deadline and not rows:
        with sqlite3.connect(state_dir / "cds.sqlite3") as db:
            rows = [
                r[0]
                for r in db.execute("SELECT event FROM audit WHERE event LIKE ?", (f"%{hook_instance}%",))
            ]
        time.sleep(0.1)
    assert rows, "audit event not written"
    event = json.loads(rows[0])
    assert event["service"] == "pml-plex-select" and event["cards"] == ["plex-estimate", "iris", "dmt"]
    assert event["sources"] and event["outcome"] == "cards"
    assert body["context"]["patientId"] not in rows[0]
    assert "Marwood" not in rows[0]


def _audit_rows(state_dir: Path, hook_instance: str) -> list[dict[str, Any]]:
    """The audit events of one call; the store writes them shortly after the answer."""
    import time

    deadline = time.monotonic() + 5
    while True:
        with sqlite3.connect(state_dir / "cds.sqlite3") as db:
            rows = db.execute(
                "SELECT event FROM audit WHERE event LIKE ?", (f"%{hook_instance}%",)
            ).fetchall()
        if rows or time.monotonic() > deadline:
            return [json.loads(r[0]) for r in rows]
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("fhir_server", "outcome", "sources"),
    [
        pytest.param(None, "fhir-data-unavailable", {"labs": "missing"}, id="no-data"),
        pytest.param("https://fhir.example.org/r4", "fhir-server-not-allowed", None, id="server-not-allowed"),
    ],
)
def test_412_answer_is_logged_and_audited(
    client: httpx.Client,
    settings: Settings,
    state_dir: Path,
    caplog: pytest.LogCaptureFixture,
    fhir_server: str | None,
    outcome: str,
    sources: dict[str, str] | None,
) -> None:
    body = request("high-level", "order-select", settings, prefetch=False)
    if fhir_server:
        body.update(fhirServer=fhir_server, fhirAuthorization={"access_token": "tok", "token_type": "Bearer"})
    hook_instance = body["hookInstance"] = str(uuid.uuid4())
    with caplog.at_level("INFO", logger="cds.hooks"):
        body412 = assert_outcome(client.post(SELECT, json=body), 412)
    assert body412["issue"][0]["diagnostics"] == outcome
    lines = [r.getMessage() for r in caplog.records if hook_instance in r.getMessage()]
    assert len(lines) == 1 and f"outcome={outcome} status=412 cards=0" in lines[0], lines
    rows = _audit_rows(state_dir, hook_instance)
    assert len(rows) == 1, rows
    event = rows[0]
    assert event["outcome"] == outcome and event["status"] == 412 and event["cards"] == []
    assert event["service"] == "pml-plex-select" and event["ms"] >= 0
    if sources is None:
        assert "sources" not in event  # refused before any read
    else:
        assert sources.items() <= event["sources"].items(), event["sources"]
    assert body["context"]["patientId"] not in json.dumps(event)


@pytest.mark.parametrize(
    ("path", "content", "headers", "status", "code"),
    [
        pytest.param(SELECT, b'{"hook": "order-select"', {}, 400, "bad-request", id="malformed"),
        pytest.param(SELECT, b"[" * 65 + b"]" * 65, {}, 400, "too-deep", id="too-deep"),
        pytest.param(
            "/cds-services/no-such-service", b"{}", {}, 404, "unknown-service", id="unknown-service"
        ),
        pytest.param(SELECT, b"{}", {"content-type": "text/plain"}, 415, "media-type", id="not-json"),
    ],
)
def test_a_refused_call_leaves_one_log_line_without_its_content(
    client: httpx.Client,
    caplog: pytest.LogCaptureFixture,
    path: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    headers = {"content-type": "application/json", **headers}
    with caplog.at_level("INFO", logger="cds.hooks"):
        body = assert_outcome(client.post(path, content=content, headers=headers), status)
    assert body["issue"][0]["diagnostics"] == code
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert lines == [f"refused POST {path} status={status} code={code} hookInstance=-"], lines


def test_a_refused_parsed_call_names_its_hook_instance_not_its_patient(
    client: httpx.Client, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    body = request("high-level", "order-sign", settings)
    body["hook"] = "patient-view"  # not an order hook: still refused (order-select/order-sign are answered)
    hook_instance = body["hookInstance"] = str(uuid.uuid4())
    with caplog.at_level("INFO", logger="cds.hooks"):
        assert_outcome(client.post(SELECT, json=body), 400)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert lines == [f"refused POST {SELECT} status=400 code=hook-mismatch hookInstance={hook_instance}"]
    assert body["context"]["patientId"] not in lines[0]


def test_no_empty_values_even_on_odd_demo_paths(client: httpx.Client, settings: Settings) -> None:
    for hook, path in (("order-select", SELECT), ("order-sign", SIGN)):
        for name in demo.scenarios():
            r = client.post(path, json=request(name, hook, settings))
            assert r.status_code == 200
            assert_no_empty_response(r.json())


def test_course_short_offers_update(client: httpx.Client, settings: Settings) -> None:
    body = client.post(SIGN, json=request("course-short", "order-sign", settings)).json()
    e = ext(body, "plex-estimate")
    assert e["orderedSessions"] == 2 and e["remainingSessions"]["estimate"] >= 4
    actions = [a for s in body["cards"][0]["suggestions"] for a in s["actions"]]
    update = next(a for a in actions if a["type"] == "update")
    assert update["resource"]["quantityQuantity"]["value"] == e["remainingSessions"]["estimate"]
    assert update["resource"]["id"]
