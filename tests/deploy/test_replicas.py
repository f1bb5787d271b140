"""Two `cds serve` OS processes behind one PostgreSQL and one Redis, as two replicas behind a load balancer.

Each replica: CDS_AUTH=jwt with a loopback JWKS issuer, CDS_DATABASE_URL = a fresh PostgreSQL database
made for this module, CDS_REDIS_URL = the local Redis with a key prefix of this module's own. The FHIR
server is a counting loopback server holding one demo patient. Shown here:

* a token whose `jti` was used on replica A is refused (401) on replica B;
* feedback posted to both (the same items to both, two suggestions of one card in the same second)
  lands exactly once per item in PostgreSQL;
* a chart link minted on A opens on B;
* order-sign on B after order-select on A (same patient, same FHIR token) reads nothing from the FHIR
  server again: the shared read cache answers (FHIR request count and B's cache-hit counter);
* `/metrics` scraped before and after a few hook calls shows the counters moving;
* the audit trail is queryable in PostgreSQL, without PHI values;
* SIGTERM during slow in-flight hook calls lets them finish (200) before the process exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cds import demo
from tests.deploy.stores import fresh_database, redis_key_prefix
from tests.security.procs import Proc, service_process
from tests.support.jwks import JwksServer, SigningKey
from tests.support.servers import serve_asgi

ISS = "https://ehr.replicas.example.org"
PUBLIC = "https://cds.replicas.example.org"  # both replicas answer for one public URL (the JWT aud)
SELECT, SIGN = "/cds-services/pml-plex-select", "/cds-services/pml-plex-sign"
CHART = re.compile(r"/charts/([A-Za-z0-9_-]{43})\.svg")


@dataclass
class CountingFhir:
    """A FHIR server on loopback holding one demo patient; counts requests and can answer slowly."""

    patient: demo.DemoPatient
    delay_s: float = 0.0
    requests: list[str] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            with self.lock:
                self.requests.append(request.url.path)
                self.tokens.add(auth)
            if not auth.startswith("Bearer "):
                return JSONResponse({"resourceType": "OperationOutcome"}, status_code=401)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            rest: str = request.path_params["rest"]
            try:
                q = {"q": f"{rest}?{request.url.query}"}
                bundle = demo.resolve_prefetch(q, self.patient.resources, self.patient.patient_id)["q"]
            except ValueError:
                bundle = {"resourceType": "Bundle", "type": "searchset", "total": 0}
            return JSONResponse(bundle, media_type="application/fhir+json")

        return Starlette(routes=[Route("/fhir/{rest:path}", handle)])

    def count(self) -> int:
        with self.lock:
            return len(self.requests)


@dataclass
class Cluster:
    a: Proc
    b: Proc
    key: SigningKey
    jku: str
    fhir: CountingFhir
    fhir_base: str
    dsn: str
    redis_prefix: str
    patient: demo.DemoPatient

    def bearer(self, path: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key.token(iss=ISS, aud=PUBLIC + path, jku=self.jku)}"}


def _env(
    *, jku: str, fhir_base: str, dsn: str, redis_url: str, prefix: str, state: Path, **extra: str
) -> dict[str, str]:
    return {
        "CDS_AUTH": "jwt",
        "CDS_PUBLIC_BASE_URL": PUBLIC,
        "CDS_JWT_ISSUERS": json.dumps(
            {ISS: {"jwks_url": jku, "allowed_jku": [jku], "fhir_servers": [fhir_base]}}
        ),
        "CDS_FHIR_SERVER_ALLOWLIST": json.dumps([fhir_base]),
        "CDS_DATABASE_URL": dsn,
        "CDS_REDIS_URL": redis_url,
        "CDS_REDIS_KEY_PREFIX": prefix,
        "CDS_STATE_DIR": str(state),
        "CDS_LOG_LEVEL": "INFO",
        "CDS_WORKERS": "1",
        **extra,
    }


@pytest.fixture(scope="module")
def cluster(pg_admin_dsn: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("replicas")
    patient = demo.patient("high-level", datetime.now(UTC))
    keys = JwksServer()
    key = keys.add_key("ehr", "ES384")
    fhir = CountingFhir(patient)
    with contextlib.ExitStack() as stack:
        stack.enter_context(keys.serve())
        fhir_base = stack.enter_context(serve_asgi(fhir.app())) + "/fhir"
        dsn = stack.enter_context(fresh_database(pg_admin_dsn, "cds_replicas"))
        prefix = stack.enter_context(redis_key_prefix(redis_url, "cds-replicas"))
        common = {
            "jku": keys.url("ehr"),
            "fhir_base": fhir_base,
            "dsn": dsn,
            "redis_url": redis_url,
            "prefix": prefix,
        }
        a = stack.enter_context(service_process(_env(**common, state=tmp / "a"), tmp / "a.log"))
        b = stack.enter_context(service_process(_env(**common, state=tmp / "b"), tmp / "b.log"))
        for proc in (a, b):  # lifespan done (migrations applied) on both
            assert httpx.get(proc.base + "/readyz", timeout=10).status_code == 200
        yield Cluster(a, b, key, keys.url("ehr"), fhir, fhir_base, dsn, prefix, patient)


def _post(base: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(base + path, json=body, headers=headers, timeout=20)


def _metrics(proc: Proc) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(proc.base + "/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= lbl)


# ---------------------------------------------------------------- shared state across replicas


def test_jti_used_on_one_replica_is_refused_on_the_other(cluster: Cluster) -> None:
    body = demo.hook_request(cluster.patient, "order-select")
    headers = cluster.bearer(SELECT)
    assert _post(cluster.a.base, SELECT, body, headers).status_code == 200
    refused = _post(cluster.b.base, SELECT, {**body, "hookInstance": str(uuid.uuid4())}, headers)
    assert refused.status_code == 401 and refused.content == b""
    assert _post(cluster.a.base, SELECT, body, headers).status_code == 401  # and on A itself
    # a fresh token is fine on B: the refusal was the replay, not B
    assert _post(cluster.b.base, SELECT, body, cluster.bearer(SELECT)).status_code == 200


def test_feedback_to_both_replicas_lands_once_per_item(cluster: Cluster) -> None:
    card = str(uuid.uuid4())
    ts = "2026-02-01T09:30:00Z"
    s1 = {"card": card, "outcome": "accepted", "outcomeTimestamp": ts, "acceptedSuggestions": [{"id": "s-1"}]}
    s2 = {"card": card, "outcome": "accepted", "outcomeTimestamp": ts, "acceptedSuggestions": [{"id": "s-2"}]}
    other = {
        "card": str(uuid.uuid4()),
        "outcome": "overridden",
        "outcomeTimestamp": ts,
        "overrideReason": {"userComment": "discussed"},
    }
    fb = SELECT + "/feedback"
    posts = [
        (cluster.a, [s1]),
        (cluster.b, [s2]),
        (cluster.b, [s1, other]),
        (cluster.a, [other, s2]),
        (cluster.a, [s1]),
        (cluster.b, [s1]),
    ]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = list(
            pool.map(
                lambda p: _post(p[0].base, fb, {"feedback": p[1]}, cluster.bearer(fb)).status_code, posts
            )
        )
    assert codes == [200] * len(posts)
    with psycopg.connect(cluster.dsn) as conn:
        rows = conn.execute(
            "SELECT card, outcome, body->'acceptedSuggestions' FROM cds_feedback WHERE card = ANY(%s)",
            ([card, other["card"]],),
        ).fetchall()
    assert sorted((c, o, json.dumps(s)) for c, o, s in rows) == sorted(
        [
            (card, "accepted", '[{"id": "s-1"}]'),
            (card, "accepted", '[{"id": "s-2"}]'),
            (other["card"], "overridden", "null"),
        ]
    )


def test_chart_link_minted_on_one_replica_opens_on_the_other(cluster: Cluster) -> None:
    body = demo.hook_request(cluster.patient, "order-select")
    r = _post(cluster.a.base, SELECT, body, cluster.bearer(SELECT))
    assert r.status_code == 200
    match = CHART.search(r.text)
    assert match, "the estimate card links a chart"
    assert r.text[match.start() - len(PUBLIC) : match.start()] == PUBLIC
    chart = httpx.get(f"{cluster.b.base}/charts/{match.group(1)}.svg", timeout=10)
    assert chart.status_code == 200 and chart.headers["content-type"].startswith("image/svg+xml")
    assert chart.text.startswith("<svg")
    assert httpx.get(f"{cluster.b.base}/charts/{'x' * 43}.svg", timeout=10).status_code == 404


def test_order_sign_on_b_after_order_select_on_a_hits_the_shared_fhir_cache(cluster: Cluster) -> None:
    access = f"fhir-token-{uuid.uuid4().hex}"  # the EHR reuses its FHIR token within its lifetime
    select = demo.hook_request(
        cluster.patient, "order-select", prefetch=False, fhir_server=cluster.fhir_base, token=access
    )
    sign = demo.hook_request(
        cluster.patient, "order-sign", prefetch=False, fhir_server=cluster.fhir_base, token=access
    )
    before_b = _metrics(cluster.b)
    n0 = cluster.fhir.count()
    r = _post(cluster.a.base, SELECT, select, cluster.bearer(SELECT))
    assert r.status_code == 200 and r.json()["cards"]
    fetched = cluster.fhir.count() - n0
    assert fetched >= 5, "order-select on A read the patient's data from the FHIR server"
    assert f"Bearer {access}" in cluster.fhir.tokens
    r = _post(cluster.b.base, SIGN, sign, cluster.bearer(SIGN))
    # same order, clinician and data: B knows through Redis what A showed, and leaves out the unchanged
    # info cards (issue 17; high-level has no warning or critical card)
    assert r.status_code == 200 and r.json()["cards"] == []
    assert cluster.fhir.count() - n0 == fetched, "order-sign on B was answered from the shared cache"
    after_b = _metrics(cluster.b)
    hits = _total(after_b, "cds_cache_lookups_total", cache="fhir", result="hit") - _total(
        before_b, "cds_cache_lookups_total", cache="fhir", result="hit"
    )
    assert hits == fetched
    # another token for the same patient does not share the entries (the cache never widens a token)
    other = demo.hook_request(
        cluster.patient,
        "order-sign",
        prefetch=False,
        fhir_server=cluster.fhir_base,
        token=f"fhir-token-{uuid.uuid4().hex}",
    )
    assert _post(cluster.b.base, SIGN, other, cluster.bearer(SIGN)).status_code == 200
    assert cluster.fhir.count() - n0 == 2 * fetched


# ---------------------------------------------------------------- operability


def test_metrics_counters_move_between_two_scrapes(cluster: Cluster) -> None:
    a = cluster.a
    before = _metrics(a)
    select = demo.hook_request(cluster.patient, "order-select")  # full prefetch: cards
    assert _post(a.base, SELECT, select, cluster.bearer(SELECT)).status_code == 200
    fetching = demo.hook_request(
        cluster.patient,
        "order-select",
        prefetch=False,
        fhir_server=cluster.fhir_base,
        token=f"fhir-token-{uuid.uuid4().hex}",
    )
    r = _post(a.base, SELECT, fetching, cluster.bearer(SELECT))
    assert r.status_code == 200
    cards = r.json()["cards"]
    non_plex = demo.hook_request(demo.patient("non-plex-order", datetime.now(UTC)), "order-select")
    assert _post(a.base, SELECT, non_plex, cluster.bearer(SELECT)).json() == {"cards": []}
    fb = SELECT + "/feedback"
    item = {
        "card": str(uuid.uuid4()),
        "outcome": "accepted",
        "outcomeTimestamp": "2026-02-02T10:00:00Z",
        "acceptedSuggestions": [{"id": "x"}],
    }
    assert _post(a.base, fb, {"feedback": [item]}, cluster.bearer(fb)).status_code == 200
    after = _metrics(a)

    def moved(name: str, **labels: str) -> float:
        return _total(after, name, **labels) - _total(before, name, **labels)

    assert moved("cds_requests_total", service="pml-plex-select", outcome="cards") == 2
    assert moved("cds_requests_total", service="pml-plex-select", outcome="no-cards") == 1
    assert moved("cds_request_duration_seconds_count", service="pml-plex-select") == 3
    assert moved("cds_cards_total", service="pml-plex-select") == 2 * len(cards)
    first = cards[0]
    kind, indicator = first["extension"]["pml-plex"]["kind"], first["indicator"]
    assert moved("cds_cards_total", service="pml-plex-select", kind=kind, indicator=indicator) >= 2
    assert moved("cds_feedback_total", service="pml-plex-select", outcome="accepted") == 1
    assert moved("cds_fhir_fetch_duration_seconds_count") >= 5
    assert moved("cds_fhir_fetch_duration_seconds_sum") > 0
    assert moved("cds_prefetch_keys_total", service="pml-plex-select", result="hit") >= 6
    assert moved("cds_prefetch_keys_total", service="pml-plex-select", result="miss") >= 5
    assert moved("cds_cache_lookups_total", cache="fhir", result="miss") >= 5


def test_audit_trail_is_queryable_in_postgres_without_phi(cluster: Cluster) -> None:
    access = f"fhir-token-{uuid.uuid4().hex}"
    sent: dict[str, str] = {}
    jwts: list[str] = []
    for proc, path, hook, prefetch in (
        (cluster.a, SELECT, "order-select", True),
        (cluster.b, SIGN, "order-sign", False),
    ):
        body = demo.hook_request(
            cluster.patient,
            hook,
            prefetch=prefetch,  # type: ignore[arg-type]
            fhir_server=cluster.fhir_base,
            token=access,
        )
        # a clinician per call: an order-sign after an order-select of the same order by the same
        # clinician leaves out unchanged info cards (issue 17), and this test needs cards in both rows
        body["context"]["userId"] = f"Practitioner/{hook}-clinician"
        headers = cluster.bearer(path)
        jwts.append(headers["Authorization"].split()[1])
        assert _post(proc.base, path, body, headers).status_code == 200
        sent[body["hookInstance"]] = path.rsplit("/", 1)[1]
    # each replica writes its queued audit events in the background, every 0.5 s (PgStore)
    deadline = time.monotonic() + 10
    while True:
        with psycopg.connect(cluster.dsn) as conn:
            rows = conn.execute(
                "SELECT at, service_id, hook_instance, issuer, event->'sources', event->'cards', event::text"
                " FROM cds_audit WHERE hook_instance = ANY(%s) ORDER BY at",
                (list(sent),),
            ).fetchall()
        if len(rows) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(rows) == 2
    for at, service, instance, issuer, sources, cards, text in rows:
        assert isinstance(at, datetime) and abs((datetime.now(UTC) - at).total_seconds()) < 120
        assert service == sent[instance] and issuer == ISS
        assert set(sources) >= {"labs", "medicationStatements", "medicationRequests"}
        assert cards and all(isinstance(k, str) for k in cards)
        for secret in (cluster.patient.patient_id, access, *jwts, cluster.fhir_base):
            assert secret not in text
        for resource in cluster.patient.resources:  # no name, birth date or value from any resource
            for value in _phi_values(resource):
                assert value not in text, "a FHIR value is in the audit trail"
    by_instance = {r[2]: r[4] for r in rows}
    select_instance = next(i for i, s in sent.items() if s == "pml-plex-select")
    sign_instance = next(i for i, s in sent.items() if s == "pml-plex-sign")
    assert by_instance[select_instance]["labs"] == "prefetch"  # which data sources were used
    assert by_instance[sign_instance]["labs"] in ("fhir", "cache")


def _phi_values(resource: dict[str, Any]) -> list[str]:
    out = []
    if resource.get("resourceType") == "Patient":
        for name in resource.get("name", []):
            out += [name.get("family", ""), *name.get("given", [])]
        out.append(resource.get("birthDate", ""))
    value = resource.get("valueQuantity", {}).get("value")
    if isinstance(value, float) and value not in (0.0, 1.0):
        out.append(repr(value))
    return [v for v in out if isinstance(v, str) and len(v) >= 4]


def test_sigterm_lets_in_flight_hook_calls_finish(cluster: Cluster, redis_url: str, tmp_path: Path) -> None:
    """A third replica on the same database; its FHIR reads take 1.5 s; SIGTERM arrives mid-call."""
    fhir = CountingFhir(cluster.patient, delay_s=1.5)
    with serve_asgi(fhir.app()) as fhir_root:
        base = fhir_root + "/fhir"
        env = _env(
            jku=cluster.jku,
            fhir_base=base,
            dsn=cluster.dsn,
            redis_url=redis_url,
            prefix=cluster.redis_prefix,
            state=tmp_path / "c",
            CDS_FHIR_TIMEOUT_S="5",
            CDS_FHIR_DEADLINE_S="6",
        )
        with service_process(env, tmp_path / "c.log") as c:
            bodies = [
                demo.hook_request(
                    cluster.patient,
                    "order-select",
                    prefetch=False,
                    fhir_server=base,
                    token=f"fhir-token-{uuid.uuid4().hex}",
                )
                for _ in range(4)
            ]
            headers = [cluster.bearer(SELECT) for _ in bodies]
            with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
                futures = [
                    pool.submit(_post, c.base, SELECT, b, h) for b, h in zip(bodies, headers, strict=True)
                ]
                deadline = time.monotonic() + 10
                while fhir.count() < len(bodies) * 5 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert fhir.count() >= len(bodies) * 5, "every call is waiting on the slow FHIR server"
                signalled = time.monotonic()
                c.proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                with pytest.raises(httpx.ConnectError):  # no new connections once shutting down
                    httpx.get(c.base + "/healthz", timeout=2)
                responses = [f.result(timeout=20) for f in futures]
            assert [r.status_code for r in responses] == [200] * len(bodies)
            assert all(r.json()["cards"] for r in responses)
            # uvicorn re-raises the SIGTERM it handled once shutdown is complete: "terminated by SIGTERM"
            assert c.proc.wait(timeout=20) in (0, -signal.SIGTERM)
            assert time.monotonic() - signalled < 15
    log = (tmp_path / "c.log").read_text()
    assert "Application shutdown complete" in log  # the lifespan closed the store, pools and Redis
    assert "redis unavailable" not in log
    with psycopg.connect(cluster.dsn) as conn:
        audited = conn.execute(
            "SELECT count(*) FROM cds_audit WHERE hook_instance = ANY(%s)",
            ([b["hookInstance"] for b in bodies],),
        ).fetchone()
    assert audited == (len(bodies),), "the in-flight calls were audited before the process exited"
