"""FhirReader: prefetch matrix, fallback to fhirServer, faults, paging and token safety, cache."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from cds.errors import DataUnavailable
from cds.fhir_cache import MemoryReadCache
from cds.fhir_io import FhirReader, prefetch_templates
from cds.outbound import same_base
from cds.settings import Settings
from tests.fhir_io.fixtures import PATIENT, bundle, realistic_prefetch

BASE = "https://ehr.example/fhir"
TOKEN = "tok-secret-123"
KEYS = (
    "patient",
    "labs",
    "lymphocytes",
    "patientStatus",
    "medicationStatements",
    "medicationRequests",
    "medicationAdministrations",
    "conditions",
    "procedures",
)
TYPE_KEY = {
    "Observation": None,
    "MedicationStatement": "medicationStatements",
    "MedicationRequest": "medicationRequests",
    "MedicationAdministration": "medicationAdministrations",
    "Condition": "conditions",
    "Procedure": "procedures",
}


def settings(**kw: Any) -> Settings:
    base = {
        "fhir_timeout_s": 0.5,
        "fhir_deadline_s": 0.8,
        "cache_ttl_s": 60,
        "fhir_max_pages": 3,
        "fhir_max_response_bytes": 64 * 1024,
    }
    base.update(kw)
    return Settings(**base)


_NOW = datetime.now(UTC).replace(microsecond=0)  # one clock for every build: facts compare equal


def now_data() -> dict[str, Any]:
    """The realistic prefetch dated against the test session's start (inside the 730-day window)."""
    return realistic_prefetch(_NOW)


class FakeFhir:
    """A FHIR server behind httpx.MockTransport, answering searches from a prefetch-shaped dict."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = data or now_data()
        self.requests: list[httpx.Request] = []
        self.override: Callable[[httpx.Request], Any] | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.override is not None:
            result = self.override(request)
            if asyncio.iscoroutine(result):
                result = await result
            if result is not None:
                return result
        rtype = request.url.path.rsplit("/", 1)[-1]
        if request.url.path.endswith(f"/Patient/{PATIENT}"):
            key = "patient"
        elif rtype == "Observation":
            codes = request.url.params.get("code", "")
            key = "lymphocytes" if "731-0" in codes else "patientStatus" if "82810-3" in codes else "labs"
        else:
            key = TYPE_KEY.get(rtype)
        if key is None:
            return httpx.Response(404, json={"resourceType": "OperationOutcome", "issue": []})
        return httpx.Response(200, json=self.data[key])

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


@pytest.fixture
def fake() -> FakeFhir:
    return FakeFhir()


async def load(
    fake: FakeFhir,
    prefetch: dict[str, Any] | None,
    s: Settings | None = None,
    token: str | None = TOKEN,
    server: str | None = BASE,
    expires_in: int | None = 300,
) -> Any:
    async with fake.client() as http:
        return await FhirReader(http, s or settings()).load(PATIENT, prefetch, server, token, expires_in)


# ---------------------------------------------------------------- prefetch matrix


async def test_full_prefetch_makes_no_fhir_calls(fake: FakeFhir) -> None:
    result = await load(fake, now_data())
    assert fake.requests == []
    assert result.sources == {k: "prefetch" for k in KEYS}
    assert result.exposure is True
    assert len(result.facts.levels) == 4 and len(result.facts.sessions) == 3
    assert result.skipped == 0


@pytest.mark.parametrize("key", KEYS[1:])
@pytest.mark.parametrize(
    "case",
    [
        "absent",
        "operation-outcome",
        "wrong-type-list",
        "wrong-type-string",
        "wrong-resource",
        "bad-entry-field",
    ],
)
async def test_unusable_prefetch_key_is_fetched(fake: FakeFhir, key: str, case: str) -> None:
    prefetch = now_data()
    if case == "absent":
        del prefetch[key]
    elif case == "operation-outcome":
        prefetch[key] = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "timeout"}],
        }
    elif case == "wrong-type-list":
        prefetch[key] = [prefetch[key]]
    elif case == "wrong-type-string":
        prefetch[key] = "Bundle"
    elif case == "wrong-resource":
        prefetch[key] = {"resourceType": "Patient", "id": PATIENT}
    else:
        prefetch[key] = {"resourceType": "Bundle", "entry": "oops"}
    full = await load(FakeFhir(), now_data())
    result = await load(fake, prefetch)
    assert len(fake.requests) == 1
    assert result.sources[key] == "fhir"
    assert result.facts == full.facts
    assert fake.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("key", KEYS)
async def test_null_prefetch_key_means_no_data(fake: FakeFhir, key: str) -> None:
    prefetch = now_data()
    prefetch[key] = None
    result = await load(fake, prefetch)
    assert fake.requests == []
    assert result.sources[key] == "prefetch"


async def test_empty_bundle_means_no_data(fake: FakeFhir) -> None:
    prefetch = now_data()
    prefetch["labs"] = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    result = await load(fake, prefetch)
    assert fake.requests == [] and result.facts.levels == ()


@pytest.mark.parametrize("prefetch", [None, {}, "not a dict", []])
async def test_missing_prefetch_field_fetches_everything(fake: FakeFhir, prefetch: Any) -> None:
    result = await load(fake, prefetch)
    paths = sorted(r.url.path.split("/fhir/", 1)[-1] for r in fake.requests)
    assert paths == [
        "Condition",
        "MedicationAdministration",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Observation",
        "Observation",
        f"Patient/{PATIENT}",
        "Procedure",
    ]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in fake.requests)
    assert result.sources == {k: "fhir" for k in KEYS}  # the Patient is read too (birth date)
    assert result.facts == (await load(FakeFhir(), now_data())).facts
    assert result.problems == ()


async def test_fallback_query_is_the_template_with_the_patient_id(fake: FakeFhir) -> None:
    prefetch = now_data()
    del prefetch["conditions"]
    async with fake.client() as http:
        await FhirReader(http, settings()).load("a&b=c", prefetch, BASE, TOKEN, None)
    (req,) = fake.requests
    assert str(req.url).startswith(f"{BASE}/Condition?patient=a%26b%3Dc&")


async def test_no_server_access_names_what_is_missing(fake: FakeFhir) -> None:
    prefetch = now_data()
    del prefetch["procedures"]
    result = await load(fake, prefetch, token=None)
    assert fake.requests == []
    assert result.sources["procedures"] == "missing"
    assert result.problems == ("procedures were not prefetched and the FHIR server could not be asked",)


async def test_open_server_only_when_allowed(fake: FakeFhir) -> None:
    prefetch = now_data()
    del prefetch["procedures"]
    await load(fake, prefetch, token=None)
    assert fake.requests == []
    result = await load(fake, prefetch, s=settings(allow_open_fhir=True), token=None)
    assert len(fake.requests) == 1 and "authorization" not in fake.requests[0].headers
    assert result.sources["procedures"] == "fhir"


@pytest.mark.parametrize("token,server", [(None, None), (TOKEN, None), (None, BASE)])
async def test_412_when_neither_medications_nor_labs_can_be_had(
    fake: FakeFhir, token: str | None, server: str | None
) -> None:
    with pytest.raises(DataUnavailable):
        await load(fake, None, token=token, server=server)
    assert fake.requests == []


async def test_no_412_when_only_one_of_medications_or_labs_is_missing(fake: FakeFhir) -> None:
    prefetch = now_data()
    del prefetch["labs"]
    result = await load(fake, prefetch, token=None)
    assert result.sources["labs"] == "missing" and result.exposure is True
    prefetch = now_data()
    del prefetch["medicationStatements"], prefetch["medicationRequests"]
    result = await load(fake, prefetch, token=None)
    assert result.exposure is True  # levels on record


async def test_prefetched_patient_of_another_patient_is_named(fake: FakeFhir) -> None:
    prefetch = now_data()
    prefetch["patient"] = {"resourceType": "Patient", "id": "someone-else"}
    result = await load(fake, prefetch)
    assert result.sources["patient"] == "error"
    assert "the prefetched patient record is for another patient and was ignored" in result.problems


async def test_malformed_entries_are_counted_and_named(fake: FakeFhir) -> None:
    prefetch = now_data()
    prefetch["labs"]["entry"].append(
        {
            "resource": {
                "resourceType": "Observation",
                "id": "x",
                "status": "final",
                "code": {"text": "natalizumab"},
                "valueQuantity": {"value": "9"},
            }
        }
    )
    prefetch["labs"]["entry"].append(
        {"search": {"mode": "outcome"}, "resource": {"resourceType": "OperationOutcome", "issue": []}}
    )
    result = await load(fake, prefetch)
    assert result.skipped == 1
    assert "1 malformed entry skipped" in result.problems


# ---------------------------------------------------------------- faults


def only_missing(key: str = "medicationStatements") -> dict[str, Any]:
    prefetch = now_data()
    del prefetch[key]
    return prefetch


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(503, text="busy"), "HTTP 503"),
        (httpx.Response(500, json={"resourceType": "OperationOutcome"}), "HTTP 500"),
        (httpx.Response(401), "access refused, HTTP 401"),
        (httpx.Response(403), "access refused, HTTP 403"),
        (httpx.Response(200, text="{not json"), "invalid JSON"),
        (httpx.Response(200, text="<html>login</html>"), "invalid JSON"),
        (httpx.Response(200, json=[1, 2]), "unexpected response"),
        (
            httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": []}),
            "the server answered with an OperationOutcome",
        ),
        (
            httpx.Response(302, headers={"Location": "https://evil.example/steal"}),
            "redirect not followed, HTTP 302",
        ),
    ],
)
async def test_failed_key_becomes_a_problem(fake: FakeFhir, response: httpx.Response, reason: str) -> None:
    fake.override = lambda request: response
    result = await load(fake, only_missing())
    assert result.sources["medicationStatements"] == "error"
    assert result.problems == (f"medication statements could not be read from the FHIR server ({reason})",)
    assert [r.url.host for r in fake.requests] == ["ehr.example"]  # the redirect was not followed


async def test_connection_error_becomes_a_problem(fake: FakeFhir) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    fake.override = refuse
    result = await load(fake, only_missing())
    assert result.problems == (
        "medication statements could not be read from the FHIR server (connection failed)",
    )


async def test_everything_failing_is_412(fake: FakeFhir) -> None:
    fake.override = lambda request: httpx.Response(401)
    with pytest.raises(DataUnavailable):
        await load(fake, None)


async def test_with_default_settings_every_search_of_a_hook_is_in_flight_at_once(fake: FakeFhir) -> None:
    """A no-prefetch hook waits one round trip: each search is held until all of them have arrived."""
    searches = len(prefetch_templates(Settings()))
    arrived = asyncio.Event()
    in_flight = 0

    async def held(request: httpx.Request) -> None:
        nonlocal in_flight
        in_flight += 1
        if in_flight == searches:
            arrived.set()
        await asyncio.wait_for(arrived.wait(), 0.4)  # a read queued behind the others would time out here

    fake.override = held
    result = await load(fake, None, s=settings(fhir_max_concurrency=Settings().fhir_max_concurrency))
    assert in_flight == searches == 9
    assert result.problems == ()


async def test_slow_server_is_cut_at_the_per_call_timeout(fake: FakeFhir) -> None:
    async def slow(request: httpx.Request) -> None:
        await asyncio.sleep(5)

    fake.override = slow
    started = time.monotonic()
    result = await load(fake, only_missing(), s=settings(fhir_timeout_s=0.2, fhir_deadline_s=1.5))
    assert time.monotonic() - started < 1.0  # cut by the 0.2 s call timeout, not the 1.5 s deadline
    assert result.problems == ("medication statements could not be read from the FHIR server (timeout)",)


async def test_overall_deadline_is_respected_with_many_slow_keys(fake: FakeFhir) -> None:
    async def slow(request: httpx.Request) -> None:
        await asyncio.sleep(0.15)  # each page under the per-call timeout, but paging goes on

    async def slow_endless(request: httpx.Request) -> httpx.Response:
        await slow(request)
        return httpx.Response(200, json=bundle(next_url=f"{BASE}?page={len(fake.requests)}"))

    fake.override = slow_endless
    started = time.monotonic()
    with pytest.raises(DataUnavailable):
        await load(
            fake,
            None,
            s=settings(fhir_timeout_s=0.2, fhir_deadline_s=0.4, fhir_max_pages=50, fhir_max_concurrency=2),
        )
    assert time.monotonic() - started < 0.9  # 0.4 s deadline; endless paging alone would take 7.5 s


async def test_reads_still_queued_at_the_deadline_are_logged(
    fake: FakeFhir, caplog: pytest.LogCaptureFixture
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        return httpx.Response(200, json=bundle())

    fake.override = slow
    with caplog.at_level("INFO", logger="cds.fhir"), pytest.raises(DataUnavailable):
        # one connection at a time: the first read holds it past the deadline, the rest never start
        await load(fake, None, s=settings(fhir_timeout_s=1.0, fhir_deadline_s=0.2, fhir_max_concurrency=1))
    per_read = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fhir read ")]
    cut = [r.getMessage() for r in caplog.records if "unfinished at the deadline" in r.getMessage()]
    assert len(per_read) == 1 and ("status=timeout" in per_read[0] or "status=deadline" in per_read[0])
    assert len(cut) == 1, cut
    assert {"Observation", "MedicationStatement", "Condition"} <= set(cut[0].split(": ")[1].split(",")), cut


async def test_deadline_keeps_what_was_read(fake: FakeFhir) -> None:
    async def slow_conditions(request: httpx.Request) -> None:
        if request.url.path.endswith("/Condition"):
            await asyncio.sleep(5)

    fake.override = slow_conditions
    started = time.monotonic()
    result = await load(fake, None, s=settings(fhir_timeout_s=1.0, fhir_deadline_s=0.3))
    assert time.monotonic() - started < 0.8  # cut by the 0.3 s deadline, not the 1.0 s call timeout
    assert result.sources["conditions"] == "error"
    assert result.sources["labs"] == "fhir" and len(result.facts.levels) == 4
    assert result.problems == ("conditions could not be read from the FHIR server (timeout)",)


async def test_huge_body_is_not_read_past_the_cap(fake: FakeFhir) -> None:
    chunks_sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        yield b'{"resourceType": "Bundle", "entry": ['
        for _ in range(50 * 1024):  # 50 MB in 1 KB chunks
            chunks_sent += 1
            yield b" " * 1024

    fake.override = lambda request: httpx.Response(200, content=body())
    result = await load(fake, only_missing())
    assert result.problems == (
        "medication statements could not be read from the FHIR server (response too large)",
    )
    assert chunks_sent < 200


async def test_declared_huge_body_is_refused_before_reading(fake: FakeFhir) -> None:
    fake.override = lambda request: httpx.Response(
        200, headers={"Content-Length": str(50 * 1024 * 1024)}, content=b"{}"
    )
    result = await load(fake, only_missing())
    assert result.problems == (
        "medication statements could not be read from the FHIR server (response too large)",
    )


# ---------------------------------------------------------------- paging and token safety


def paged(fake: FakeFhir, pages: list[dict[str, Any]]) -> None:
    def serve(request: httpx.Request) -> httpx.Response | None:
        page = request.url.params.get("page")
        if page is None and request.url.path.endswith("/MedicationStatement"):
            return httpx.Response(200, json=pages[0])
        if page is not None:
            return httpx.Response(200, json=pages[int(page)])
        return None

    fake.override = serve


async def test_next_links_are_followed_on_the_same_server(fake: FakeFhir) -> None:
    entries = now_data()["medicationStatements"]["entry"]
    pages = [
        {
            "resourceType": "Bundle",
            "entry": [entries[0]],
            "link": [{"relation": "next", "url": f"{BASE}?page=1"}],
        },
        {"resourceType": "Bundle", "entry": [entries[1]], "link": [{"relation": "next", "url": "?page=2"}]},
        {"resourceType": "Bundle", "entry": [entries[2]]},
    ]
    paged(fake, pages)
    result = await load(fake, only_missing())
    assert len(fake.requests) == 3
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in fake.requests)
    assert {m.source for m in result.facts.medications if m.source.startswith("MedicationStatement")} == {
        "MedicationStatement/ms-ntz",
        "MedicationStatement/ms-fingo",
        "MedicationStatement/ms-dmf",
    }
    assert result.problems == ()


async def test_endless_next_links_stop_at_the_page_cap(fake: FakeFhir) -> None:
    fake.override = lambda request: (
        httpx.Response(200, json=bundle(next_url=f"{BASE}/MedicationStatement?page=x"))
        if request.url.path.endswith("/MedicationStatement")
        else None
    )
    result = await load(fake, only_missing(), s=settings(fhir_max_pages=4))
    assert len(fake.requests) == 4
    assert result.sources["medicationStatements"] == "fhir"
    assert result.problems == ("medication statements: more than 4 pages; only the first 4 were read",)


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/fhir/MedicationStatement?page=1",
        "http://ehr.example/fhir/MedicationStatement?page=1",  # scheme downgrade
        "https://ehr.example:8443/fhir/MedicationStatement?page=1",
        "https://ehr.example/other/MedicationStatement?page=1",
        "https://ehr.example/fhirx?page=1",
        "https://ehr.example/fhir/../admin?page=1",
        "https://user:pw@ehr.example/fhir?page=1",
        "//evil.example/fhir?page=1",
    ],
)
async def test_next_link_elsewhere_is_never_requested(fake: FakeFhir, next_url: str) -> None:
    entries = now_data()["medicationStatements"]["entry"]
    paged(
        fake, [{"resourceType": "Bundle", "entry": entries, "link": [{"relation": "next", "url": next_url}]}]
    )
    result = await load(fake, only_missing())
    assert [(r.url.host, r.url.path) for r in fake.requests] == [("ehr.example", "/fhir/MedicationStatement")]
    assert result.problems == (
        "medication statements: a next-page link outside the FHIR server was not followed",
    )
    assert len([m for m in result.facts.medications if m.source.startswith("MedicationStatement")]) == 3


async def test_prefetched_bundle_next_link_is_followed_with_the_token(fake: FakeFhir) -> None:
    prefetch = now_data()
    entries = prefetch["medicationStatements"]["entry"]
    prefetch["medicationStatements"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": entries[:1],
        "link": [{"relation": "next", "url": f"{BASE}?page=1"}],
    }
    paged(fake, [{}, {"resourceType": "Bundle", "entry": entries[1:]}])
    result = await load(fake, prefetch)
    assert len(fake.requests) == 1 and fake.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert result.sources["medicationStatements"] == "prefetch"
    assert len([m for m in result.facts.medications if m.source.startswith("MedicationStatement")]) == 3


async def test_prefetched_next_link_to_another_host_is_not_followed(fake: FakeFhir) -> None:
    prefetch = now_data()
    prefetch["medicationStatements"]["link"] = [
        {"relation": "next", "url": "https://evil.example/fhir?page=1"}
    ]
    result = await load(fake, prefetch)
    assert fake.requests == []
    assert result.problems == ("medication statements: only the first prefetched page could be read",)


async def test_prefetched_next_link_without_token_is_not_followed(fake: FakeFhir) -> None:
    prefetch = now_data()
    prefetch["labs"]["link"] = [{"relation": "next", "url": f"{BASE}?page=1"}]
    result = await load(fake, prefetch, token=None)
    assert fake.requests == []
    assert result.problems == ("laboratory results: only the first prefetched page could be read",)


def test_same_base() -> None:
    assert same_base("https://h/fhir?x=1", "https://h/fhir")
    assert same_base("https://h:443/fhir/Observation?x=1", "https://h/fhir")
    assert same_base("https://H/fhir/Observation", "https://h/fhir/")
    assert same_base("http://127.0.0.1:8080/Observation", "http://127.0.0.1:8080")
    assert not same_base("https://h/fhir2", "https://h/fhir")
    assert not same_base("https://h:99999/fhir", "https://h/fhir")
    assert not same_base("ftp://h/fhir", "ftp://h/fhir")
    assert not same_base("https://h.evil/fhir", "https://h/fhir")


# ---------------------------------------------------------------- cache


async def test_cache_hits_for_the_same_token_and_misses_for_another(fake: FakeFhir) -> None:
    s = settings()
    async with fake.client() as http:
        reader = FhirReader(http, s)
        first = await reader.load(PATIENT, only_missing(), BASE, TOKEN, 300)
        second = await reader.load(PATIENT, only_missing(), BASE, TOKEN, 300)
        assert len(fake.requests) == 1
        assert (first.sources["medicationStatements"], second.sources["medicationStatements"]) == (
            "fhir",
            "cache",
        )
        assert first.facts == second.facts
        await reader.load(PATIENT, only_missing(), BASE, "another-token", 300)
        assert len(fake.requests) == 2
        await reader.load(PATIENT, only_missing(), "https://other.example/fhir", TOKEN, 300)
        assert len(fake.requests) == 3
        await reader.load("pat-2", only_missing(), BASE, TOKEN, 300)
        assert len(fake.requests) == 4


async def test_cache_never_holds_the_raw_token(fake: FakeFhir) -> None:
    async with fake.client() as http:
        reader = FhirReader(http, settings())
        await reader.load(PATIENT, only_missing(), BASE, TOKEN, 300)
        assert isinstance(reader.cache, MemoryReadCache) and len(reader.cache) == 1
        assert TOKEN not in repr(list(reader.cache.keys()))


async def test_cache_expires_with_the_token(fake: FakeFhir) -> None:
    clock = [1000.0]
    async with fake.client() as http:
        reader = FhirReader(http, settings(cache_ttl_s=60), clock=lambda: clock[0])
        await reader.load(PATIENT, only_missing(), BASE, TOKEN, 10)  # token lives 10 s < 60 s
        clock[0] += 9
        await reader.load(PATIENT, only_missing(), BASE, TOKEN, 10)
        assert len(fake.requests) == 1
        clock[0] += 2
        await reader.load(PATIENT, only_missing(), BASE, TOKEN, 10)
        assert len(fake.requests) == 2
        clock[0] += 61  # settings TTL caps a long-lived token too
        await reader.load(PATIENT, only_missing(), BASE, TOKEN, 3600)
        clock[0] += 59
        await reader.load(PATIENT, only_missing(), BASE, TOKEN, 3600)
        assert len(fake.requests) == 3
        clock[0] += 2
        await reader.load(PATIENT, only_missing(), BASE, TOKEN, 3600)
        assert len(fake.requests) == 4


@pytest.mark.parametrize(("ttl", "expires_in"), [(0, 300), (60, 0)])
async def test_cache_off(fake: FakeFhir, ttl: int, expires_in: int) -> None:
    async with fake.client() as http:
        reader = FhirReader(http, settings(cache_ttl_s=ttl))
        for _ in range(2):
            await reader.load(PATIENT, only_missing(), BASE, TOKEN, expires_in)
    assert len(fake.requests) == 2


async def test_failures_are_not_cached(fake: FakeFhir) -> None:
    fake.override = lambda request: httpx.Response(503)
    async with fake.client() as http:
        reader = FhirReader(http, settings())
        await reader.load(PATIENT, only_missing(), BASE, TOKEN, 300)
        fake.override = None
        result = await reader.load(PATIENT, only_missing(), BASE, TOKEN, 300)
    assert len(fake.requests) == 2 and result.sources["medicationStatements"] == "fhir"


async def test_concurrent_loads_share_one_in_flight_fetch(fake: FakeFhir) -> None:
    async def slow(request: httpx.Request) -> None:
        await asyncio.sleep(0.05)

    fake.override = slow
    clock = [1000.0]
    async with fake.client() as http:
        reader = FhirReader(http, settings(cache_ttl_s=60), clock=lambda: clock[0])
        results = await asyncio.gather(
            *(reader.load(PATIENT, only_missing(), BASE, TOKEN, 300) for _ in range(5))
        )
        assert len(fake.requests) == 1
        assert all(r.facts == results[0].facts for r in results)
        # the shared fetch ends with its reads: once the cache has aged out, the next load reads anew
        clock[0] += 61
        again = await reader.load(PATIENT, only_missing(), BASE, TOKEN, 300)
    assert len(fake.requests) == 2 and again.sources["medicationStatements"] == "fhir"


# ---------------------------------------------------------------- logging


async def test_one_log_line_per_fetch_without_token_ids_or_query(
    fake: FakeFhir, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cds.fhir")
    async with fake.client() as http:
        reader = FhirReader(http, settings())
        await reader.load(PATIENT, None, BASE, TOKEN, 300)
        await reader.load(PATIENT, only_missing(), BASE, TOKEN, 300)
    lines = [r.getMessage() for r in caplog.records if r.name == "cds.fhir"]
    assert len(lines) == len(KEYS) + 1
    assert sum("cache=hit" in line for line in lines) == 1
    assert all("type=" in line and "status=" in line and "ms=" in line for line in lines)
    for line in lines:
        for secret in (TOKEN, PATIENT, "ehr.example", "loinc", "_count", "Tysabri"):
            assert secret not in line


async def test_other_patient_entries_are_named(fake: FakeFhir) -> None:
    prefetch = now_data()
    for entry in prefetch["labs"]["entry"][:2]:
        entry["resource"]["subject"] = {"reference": "Patient/somebody-else"}
    result = await load(fake, prefetch)
    assert "2 entries about another patient left out" in result.problems


async def test_empty_patient_id_never_fetches(fake: FakeFhir) -> None:
    async with fake.client() as http:
        with pytest.raises(DataUnavailable):
            await FhirReader(http, settings()).load("", None, BASE, TOKEN, 300)
    assert fake.requests == []


async def test_prefetch_is_not_mutated(fake: FakeFhir) -> None:
    prefetch = now_data()
    before = copy.deepcopy(prefetch)
    await load(fake, prefetch)
    assert prefetch == before


# ---------------------------------------------------------------- issue 15: the patient and new keys


async def test_absent_patient_is_read_from_the_server(fake: FakeFhir) -> None:
    prefetch = now_data()
    del prefetch["patient"]
    result = await load(fake, prefetch)
    assert [r.url.path for r in fake.requests] == [f"/fhir/Patient/{PATIENT}"]
    assert result.sources["patient"] == "fhir"
    assert result.facts.patient.birth_date == date(1984, 2, 11)


async def test_a_patient_that_cannot_be_read_is_named_not_412(fake: FakeFhir) -> None:
    prefetch = now_data()
    del prefetch["patient"]
    fake.override = lambda request: httpx.Response(
        404, json={"resourceType": "OperationOutcome", "issue": []}
    )
    result = await load(fake, prefetch)
    assert result.sources["patient"] == "error"
    assert result.problems == ("the patient record could not be read from the FHIR server (HTTP 404)",)
    assert result.facts.patient.birth_date is None


async def test_a_patient_key_missing_without_server_access_is_named(fake: FakeFhir) -> None:
    prefetch = now_data()
    del prefetch["patient"], prefetch["patientStatus"]
    result = await load(fake, prefetch, token=None)
    assert fake.requests == []
    assert result.problems == (
        "the patient record was not prefetched and the FHIR server could not be asked",
        "pregnancy, breastfeeding and weight observations were not prefetched and the FHIR server could not be asked",
    )


async def test_administrations_alone_are_medications_read_no_412(fake: FakeFhir) -> None:
    prefetch = now_data()
    for key in ("labs", "medicationStatements", "medicationRequests"):
        del prefetch[key]
    result = await load(fake, prefetch, token=None)
    assert result.sources["medicationAdministrations"] == "prefetch"
    assert [d.source for d in result.facts.doses] == ["MedicationAdministration/ma-ntz"]
    assert result.exposure is True
