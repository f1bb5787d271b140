"""Issue 17 over real HTTP: card order, length, full page, actions, hook mismatch, order-sign after
order-select (in-process memory and shared through the real Redis)."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds import demo
from cds.settings import Settings
from tests.hooks.checks import check_response, kinds
from tests.hooks.conftest import make_settings
from tests.support.servers import serve_service

SELECT = "/cds-services/pml-plex-select"
SIGN = "/cds-services/pml-plex-sign"
SEVERITY = {"critical": 0, "warning": 1, "info": 2}


def request(name: str, hook: str, settings: Settings, user: str | None = None) -> dict[str, Any]:
    body = demo.hook_request(demo.patient(name, datetime.now(UTC)), hook, settings=settings)  # type: ignore[arg-type]
    body["context"]["userId"] = user or f"Practitioner/{uuid.uuid4()}"
    return body


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tmp_path_factory.mktemp("cds-17"), cache_ttl_s=300)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[httpx.Client]:
    with serve_service(settings) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    check_response(r.json())
    cards: list[dict[str, Any]] = r.json()["cards"]
    return cards


# ---------------------------------------------------------------- order, length, conventions


@pytest.mark.parametrize("name", demo.scenarios())
def test_every_demo_patient_most_severe_first_short_and_conventional(
    client: httpx.Client, settings: Settings, name: str
) -> None:
    cards = post(client, SELECT, request(name, "order-select", settings))
    ranks = [(SEVERITY[c["indicator"]], ["plex-estimate", "iris", "dmt"].index(kind(c))) for c in cards]
    assert ranks == sorted(ranks)
    for c in cards:
        assert len(c.get("detail", "")) <= 1000, (name, kind(c), len(c["detail"]))
        topic = c["source"]["topic"]
        assert topic == {"system": "urn:pml-plex:card-topic", "code": kind(c), "display": topic["display"]}
        assert topic["display"]
        urls = {link["url"] for link in c.get("links", [])}
        for url in re.findall(r"(?<!\\)\[[^\[\]\\]+\]\((https?://[^\s()]+)\)", c.get("detail", "")):
            assert url in urls  # every markdown link also in links[]
        if "suggestions" in c:
            assert c["selectionBehavior"] == "any" and len(c["suggestions"]) <= 3
            flags = [bool(s.get("isRecommended")) for s in c["suggestions"]]
            assert flags.count(True) <= 1 and (True not in flags or flags[0])
        if c["indicator"] == "critical":
            assert kind(c) == "dmt" and c["extension"]["pml-plex"]["activeConflicts"]
        for s in c.get("suggestions", []):
            for a in s["actions"]:
                res = a.get("resource", {})
                if res.get("resourceType") == "MedicationRequest" and a["type"] == "create":
                    text = res["medicationCodeableConcept"]["text"]
                    assert "fumarate" not in text and text not in c["extension"]["pml-plex"]["avoid"]
                    assert (
                        res["dosageInstruction"][0]["text"] in s["label"]
                        and "Start once" in res["note"][0]["text"]
                    )
                    assert res["dosageInstruction"][0]["text"] in c["detail"]


def kind(c: dict[str, Any]) -> str:
    return str(c["extension"]["pml-plex"]["kind"])


def test_critical_first_and_its_stop_action(client: httpx.Client, settings: Settings) -> None:
    body = request("active-fingolimod", "order-select", settings)
    cards = post(client, SELECT, body)
    assert cards[0]["indicator"] == "critical" and kind(cards[0]) == "dmt"
    stop = cards[0]["suggestions"][0]
    assert stop["isRecommended"] and stop["label"].startswith("Stop fingolimod")
    (action,) = stop["actions"]
    assert action["type"] == "update" and action["resource"]["status"] == "stopped"
    prefetched = {e["resource"]["id"]: e["resource"] for e in body["prefetch"]["medicationRequests"]["entry"]}
    original = prefetched[action["resource"]["id"]]
    assert (
        original["status"] == "active"
        and "fingolimod" in original["medicationCodeableConcept"]["text"].lower()
    )
    # the whole resource, only status (and its reason) changed
    changed = {k for k in action["resource"] if action["resource"][k] != original.get(k)}
    assert changed == {"status", "statusReason"}


def test_below_target_with_sessions_ordered_offers_removal(client: httpx.Client, settings: Settings) -> None:
    body = request("below-target", "order-select", settings)
    cards = post(client, SELECT, body)
    est = next(c for c in cards if kind(c) == "plex-estimate")
    assert est["indicator"] == "warning" and cards[0] is est
    first = est["suggestions"][0]
    order_id = body["context"]["draftOrders"]["entry"][0]["resource"]["id"]
    assert first["isRecommended"] and first["actions"] == [
        {
            "type": "delete",
            "description": first["actions"][0]["description"],
            "resourceId": f"ServiceRequest/{order_id}",
        }
    ]
    assert "consider stopping once a level confirms" not in est["detail"]
    assert "a suggestion removes the draft order" in est["detail"]


def test_course_update_says_plex_may_hasten_iris(client: httpx.Client, settings: Settings) -> None:
    cards = post(client, SELECT, request("course-short", "order-select", settings))
    est = next(c for c in cards if kind(c) == "plex-estimate")
    update = next(s for s in est["suggestions"] if s["actions"][0]["type"] == "update")
    assert "PLEX may bring IRIS sooner (Tan 2011)" in update["label"]
    assert "plasma volumes every" in update["label"]
    assert "PLEX may bring IRIS sooner ([Tan 2011](" in est["detail"]


def test_full_page_linked_opaque_and_complete(client: httpx.Client, settings: Settings) -> None:
    body = request("post-session", "order-select", settings)
    cards = post(client, SELECT, body)
    est = next(c for c in cards if kind(c) == "plex-estimate")
    page_link = next(link for link in est["links"] if "/cards/" in link["url"])
    url = page_link["url"]
    assert url.startswith(settings.public_base_url + "/cards/")
    opaque = url.rsplit("/", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", opaque) and body["context"]["patientId"] not in url
    r = httpx.get(url.replace(settings.public_base_url, str(client.base_url).rstrip("/")), timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<table>" in r.text and "Assumptions:" in r.text and "Sources" in r.text
    assert "<script" not in r.text
    # the post-session headline and the page agree: no EU half-life figure computed without the factor
    assert "with the EU steady-state half-life" not in r.text
    assert client.get("/cards/" + "A" * 43).status_code == 404


# ---------------------------------------------------------------- the Sandbox's hook mismatch


@pytest.mark.parametrize(
    ("path", "sent", "answered"),
    [(SELECT, "order-sign", "order-select"), (SIGN, "order-select", "order-sign")],
)
def test_order_hook_mismatch_answered_as_the_services_own_hook_and_logged(
    client: httpx.Client,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    path: str,
    sent: str,
    answered: str,
) -> None:
    body = request("high-level", answered, settings)
    body["hook"] = sent
    with caplog.at_level(logging.WARNING, logger="cds.hooks"):
        cards = post(client, path, body)
    assert kinds({"cards": cards}) == ["plex-estimate", "iris", "dmt"]
    lines = [r.getMessage() for r in caplog.records if "answered as" in r.getMessage()]
    assert len(lines) == 1 and f"sent hook={sent}; answered as {answered}" in lines[0]
    assert body["context"]["patientId"] not in lines[0]


@pytest.mark.parametrize("hook", ["patient-view", "order-dispatch", "ORDER-SIGN"])
def test_other_hook_names_still_400(client: httpx.Client, settings: Settings, hook: str) -> None:
    body = request("high-level", "order-select", settings)
    body["hook"] = hook
    r = client.post(SELECT, json=body)
    assert r.status_code == 400 and r.json()["issue"][0]["diagnostics"] == "hook-mismatch"


# ---------------------------------------------------------------- order-sign after order-select


def _sign_after_select(
    client: httpx.Client, settings: Settings, name: str, user: str
) -> tuple[list[Any], list[Any]]:
    selected = post(client, SELECT, request(name, "order-select", settings, user))
    signed = post(client, SIGN, request(name, "order-sign", settings, user))
    return selected, signed


def test_sign_after_select_shows_only_changes_and_every_warning(
    client: httpx.Client, settings: Settings
) -> None:
    user = f"Practitioner/{uuid.uuid4()}"
    selected, signed = _sign_after_select(client, settings, "high-level", user)
    assert [c["indicator"] for c in selected] == ["info", "info", "info"]
    assert signed == []  # nothing changed, nothing above info
    # the critical card comes back at signing; unchanged info cards do not
    selected, signed = _sign_after_select(client, settings, "active-fingolimod", user)
    assert len(selected) == 3
    assert [kind(c) for c in signed] == ["dmt"] and signed[0]["indicator"] == "critical"
    # warnings too
    selected, signed = _sign_after_select(client, settings, "brainstem-pml", user)
    assert {kind(c) for c in signed} == {
        c["extension"]["pml-plex"]["kind"] for c in selected if c["indicator"] != "info"
    }
    assert signed


def test_sign_without_select_or_by_another_clinician_shows_everything(
    client: httpx.Client, settings: Settings
) -> None:
    assert len(post(client, SIGN, request("high-level", "order-sign", settings))) == 3
    post(client, SELECT, request("high-level", "order-select", settings, "Practitioner/a"))
    assert len(post(client, SIGN, request("high-level", "order-sign", settings, "Practitioner/b"))) == 3


def test_sign_after_select_with_changed_data_shows_the_changed_card(
    client: httpx.Client, settings: Settings
) -> None:
    user = f"Practitioner/{uuid.uuid4()}"
    post(client, SELECT, request("high-level", "order-select", settings, user))
    body = request("high-level", "order-sign", settings, user)
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["quantityQuantity"]["value"] = 2  # the clinician shortened the course before signing
    signed = post(client, SIGN, body)
    assert [kind(c) for c in signed] == ["plex-estimate"]


def test_memory_holds_digests_not_card_text(settings: Settings, tmp_path: Path) -> None:
    st = make_settings(tmp_path, cache_ttl_s=300)
    from cds.app import create_app
    from cds.views.link_store import MemoryLinkStore
    from tests.support.servers import serve_asgi

    store = MemoryLinkStore()
    with serve_asgi(create_app(st, links=store)) as url, httpx.Client(base_url=url, timeout=10) as c:
        cards = post(c, SELECT, request("active-fingolimod", "order-select", st, "Practitioner/x"))
        kept = list(store.memories().items())
    assert len(kept) == 1
    key, value = kept[0]
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert all(re.fullmatch(r"[a-z-]+:[0-9a-f]{32}", d) for d in value.split())
    for card in cards:
        assert card["summary"] not in value and "fingolimod" not in value


def test_no_memory_without_a_read_cache(tmp_path: Path) -> None:
    st = make_settings(tmp_path, cache_ttl_s=0)
    with serve_service(st) as url, httpx.Client(base_url=url, timeout=10) as c:
        post(c, SELECT, request("high-level", "order-select", st, "Practitioner/y"))
        assert len(post(c, SIGN, request("high-level", "order-sign", st, "Practitioner/y"))) == 3


def test_memory_shared_by_replicas_through_redis(tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"cds-test-{uuid.uuid4().hex[:8]}:"
    a = make_settings(
        tmp_path / "a", redis_url="redis://127.0.0.1:6379/0", redis_key_prefix=prefix, cache_ttl_s=60
    )
    b = make_settings(
        tmp_path / "b", redis_url="redis://127.0.0.1:6379/0", redis_key_prefix=prefix, cache_ttl_s=60
    )
    user = f"Practitioner/{uuid.uuid4()}"
    with (
        serve_service(a) as url_a,
        serve_service(b) as url_b,
        httpx.Client(base_url=url_a, timeout=10) as ca,
        httpx.Client(base_url=url_b, timeout=10) as cb,
    ):
        post(ca, SELECT, request("high-level", "order-select", a, user))
        assert post(cb, SIGN, request("high-level", "order-sign", b, user)) == []
        # a page made on replica a opens on replica b
        cards = post(ca, SELECT, request("high-level", "order-select", a, user))
        page = next(link["url"] for link in cards[0]["links"] if "/cards/" in link["url"])
        assert cb.get("/cards/" + page.rsplit("/", 1)[1]).status_code == 200
    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(r.scan_iter(prefix + "shown:*"))
    assert keys and all(0 < r.pttl(k) <= 60_000 for k in keys)
    for k in r.scan_iter(prefix + "*"):
        r.delete(k)
