"""The one place that reads FHIR: prefetch first, then fhirServer. The resources read become engine facts
in `cds/fhir/facts.py` (pure mapping, no I/O); draft orders become plans in `cds/fhir/orders.py`.

    PREFETCH templates: prefetch_templates(settings) -> dict[str, str]   (discovery publishes them)
    FhirReader(http, settings).load(patient_id, prefetch, fhir_server, token, expires_in) -> LoadResult

Reading. Each prefetch key is used when it holds a Bundle (or, for `patient`, a Patient) or `null`
(= no data, CDS Hooks 2.0 §prefetch). A key that is absent, an OperationOutcome or of the wrong type
is fetched from fhirServer with the bearer token (or without one only when `allow_open_fhir`), all
keys at once under a Semaphore, each page within `fhir_timeout_s`, everything within
`fhir_deadline_s`. `link[next]` is followed up to `fhir_max_pages`, and only to the same scheme,
host, port and base path as fhirServer (cds.outbound.same_base), so the token never leaves it;
redirects are never followed; bodies are read as a stream and dropped past `fhir_max_response_bytes`.
A key that fails becomes a plain-text problem and `sources[key] = "error"`. The `patient` key is a
read (`Patient/{id}`), fetched like the searches when it is not prefetched. `DataUnavailable` (412)
only when neither medications (statements, requests or administrations) nor labs could be read.

Caching (cds/fhir_cache.py). A successful search is kept under (fhirServer, query, SHA-256 of the
token) for min(`cache_ttl_s`, the token's `expires_in`), so it never widens what a token may read:
in-process (`MemoryReadCache`), or in Redis when `redis_url` is set (`RedisReadCache`, shared by
replicas, JSON values; Redis failing degrades to no cache). Concurrent identical reads share one
in-flight fetch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin

import httpx

from cds import metrics
from cds.engine import drugs
from cds.engine.domain import PatientFacts
from cds.errors import DataUnavailable
from cds.fhir.bundles import KEY_LABELS, KEY_TYPES, bundle_resources, key_resources, next_link, searched_type
from cds.fhir.facts import parse_resources
from cds.fhir_cache import ReadCache, json_loads, open_read_cache
from cds.outbound import pool_limits, same_base
from cds.settings import Settings
from cds.shared_redis import SharedRedis

log = logging.getLogger("cds.fhir")

__all__ = ["FhirReader", "LoadResult", "prefetch_templates"]


@dataclass(frozen=True)
class LoadResult:
    facts: PatientFacts
    exposure: bool  # natalizumab medication or level on record
    sources: dict[str, str] = field(default_factory=dict)  # key -> prefetch|fhir|cache|missing|error
    problems: tuple[str, ...] = ()  # plain text the cards show: what could not be read
    skipped: int = 0  # malformed entries skipped


_LYMPHOCYTE_CODES = "http://loinc.org|731-0,http://loinc.org|26474-7,http://loinc.org|732-8"
NATALIZUMAB_ANTIBODY_CODE = "http://loinc.org|58012-6"
# pregnancy status, breastfeeding status, body weight (codes cited in cds/fhir/terms.py)
_PATIENT_STATUS_CODES = "http://loinc.org|82810-3,http://loinc.org|63895-7,http://loinc.org|29463-7"


def prefetch_templates(settings: Settings) -> dict[str, str]:
    """Prefetch key -> CDS Hooks 2.0 template; the fallback issues the same queries itself.

    No LOINC code exists for serum natalizumab, so by default `labs` fetches recent laboratory
    Observations broadly and text matching finds the levels; a site's configured level codes narrow it.
    Date windows cannot be written in a 2.0 template: the service filters by date after reading.
    """
    pid = "{{context.patientId}}"
    level_codes = list(settings.natalizumab_level_codes)
    if level_codes:
        labs = f"Observation?patient={pid}&code={','.join(level_codes + [NATALIZUMAB_ANTIBODY_CODE])}&_sort=-date&_count=50"
    else:
        labs = f"Observation?patient={pid}&category=laboratory&_sort=-date&_count=200"
    return {
        "patient": f"Patient/{pid}",
        "labs": labs,
        "lymphocytes": f"Observation?patient={pid}&code={_LYMPHOCYTE_CODES}&_sort=-date&_count=10",
        "patientStatus": f"Observation?patient={pid}&code={_PATIENT_STATUS_CODES}&_sort=-date&_count=20",
        "medicationStatements": f"MedicationStatement?patient={pid}&_count=100",
        "medicationRequests": f"MedicationRequest?patient={pid}&_count=100",
        "medicationAdministrations": f"MedicationAdministration?patient={pid}&_count=100",
        "conditions": f"Condition?patient={pid}&_count=100",
        "procedures": f"Procedure?patient={pid}&status=completed&_count=100",
    }


# ================================================================ reading: prefetch, then fhirServer

_MEDICATION_KEYS = ("medicationStatements", "medicationRequests", "medicationAdministrations")
_READ = frozenset({"prefetch", "fhir", "cache"})


class _Unreadable(Exception):
    """`reason` is card text; `kind` a bounded label for metrics."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass
class _Fetched:
    resources: list[Any]
    error: str | None = None  # nothing usable: why
    note: str | None = None  # something read, but not all of it: why
    cached: bool = False


@dataclass
class _Call:
    """One load: where and how it may read, and what it has read so far."""

    base: str | None  # fhirServer without its trailing slash
    patient_id: str
    token: str | None
    can_fetch: bool
    ttl: float  # how long its searches may be cached; 0: not at all
    deadline: float  # time.monotonic() by which every read has ended
    semaphore: asyncio.Semaphore  # its reads at once: fhir_max_concurrency
    collected: dict[str, list[Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    jobs: dict[str, Coroutine[Any, Any, _Fetched]] = field(default_factory=dict)


class FhirReader:
    """Reads what the engine needs for one patient: prefetch first, then fhirServer. One per app.

    `redis`: the lifespan's shared client (cds.shared_redis), or None for the in-process read cache;
    `clock` (seconds, monotonic) ages the read cache; tests pass their own."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: Settings,
        *,
        redis: SharedRedis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._settings = settings
        self._cache = open_read_cache(settings, clock, redis) if settings.cache_ttl_s > 0 else None
        self._inflight: dict[tuple[str, str, str], asyncio.Future[_Fetched]] = {}
        # GETs in flight, app-wide, stay below the pool's size (a few slots left for auth's JWKS
        # reads): a request that waits inside httpx for a pool slot and times out there can leave a
        # CONNECTING connection behind that holds its slot for good (encode/httpcore#1093); here
        # the wait is an asyncio.Semaphore, which a timeout leaves intact.
        size = pool_limits(settings).max_connections or 16
        self._slots = asyncio.Semaphore(max(1, size - _POOL_RESERVED))
        import fhir.resources.R4B.servicerequest  # noqa: F401  (warm: draft orders are R4B-validated)

    # ------------------------------------------------------------ public

    @property
    def cache(self) -> ReadCache | None:
        """The read cache (None when `cache_ttl_s` is 0)."""
        return self._cache

    async def aclose(self) -> None:
        if self._cache is not None:
            await self._cache.aclose()

    async def load(
        self,
        patient_id: str,
        prefetch: dict[str, Any] | None,
        fhir_server: str | None,
        token: str | None,
        expires_in: int | None,
    ) -> LoadResult:
        call = self._call(patient_id, fhir_server, token, expires_in)
        given = prefetch if isinstance(prefetch, dict) else {}
        templates = prefetch_templates(self._settings)
        for key, template in templates.items():
            if not self._prefetched(call, key, given.get(key, _ABSENT)):
                self._fetch(call, key, template)
        for key, fetched in (await self._run(call)).items():
            _merge(call, key, fetched)
        medications_read = any(call.sources.get(k) in _READ for k in _MEDICATION_KEYS)
        if not medications_read and call.sources.get("labs") not in _READ:
            raise DataUnavailable(
                "neither medications nor laboratory results could be read from prefetch or the FHIR server",
                code="fhir-data-unavailable",
                sources=call.sources,
            )
        in_key_order = [resource for key in templates for resource in call.collected.get(key, ())]
        parsed = parse_resources(in_key_order, self._settings, patient_id=call.patient_id)
        if n := parsed.other_patient:
            call.problems.append(f"{n} {'entry' if n == 1 else 'entries'} about another patient left out")
        if n := parsed.skipped:
            call.problems.append(f"{n} malformed {'entry' if n == 1 else 'entries'} skipped")
        exposure = bool(drugs.has_natalizumab_exposure(parsed.facts))
        return LoadResult(parsed.facts, exposure, call.sources, tuple(call.problems), parsed.skipped)

    # ------------------------------------------------------------ planning the reads

    def _call(
        self, patient_id: str, fhir_server: str | None, token: str | None, expires_in: int | None
    ) -> _Call:
        s = self._settings
        base = fhir_server.rstrip("/") if isinstance(fhir_server, str) and fhir_server else None
        patient_id = patient_id if isinstance(patient_id, str) else ""
        can_fetch = base is not None and bool(patient_id) and (bool(token) or s.allow_open_fhir)
        return _Call(
            base,
            patient_id,
            token or None,
            can_fetch,
            self._ttl(expires_in),
            time.monotonic() + s.fhir_deadline_s,
            asyncio.Semaphore(s.fhir_max_concurrency),
        )

    def _prefetched(self, call: _Call, key: str, value: Any) -> bool:
        """Take prefetch[key] when it can be used (a Bundle, null, the patient's Patient); False when
        the key must be read from the FHIR server instead."""
        if value is None:  # CDS Hooks: present and null = no data
            call.collected[key], call.sources[key] = [], "prefetch"
            return True
        rtype = value.get("resourceType") if isinstance(value, dict) else None
        if rtype == "Bundle" and (resources := bundle_resources(value, KEY_TYPES[key])) is not None:
            call.collected[key], call.sources[key] = resources, "prefetch"
            if (next_url := next_link(value)) is not None:
                self._continue(call, key, next_url)
            return True
        if key == "patient" and rtype == "Patient":
            if value.get("id") in (None, call.patient_id):
                call.collected[key], call.sources[key] = [value], "prefetch"
            else:
                call.sources[key] = "error"
                call.problems.append("the prefetched patient record is for another patient and was ignored")
            return True
        return False

    def _continue(self, call: _Call, key: str, next_url: str) -> None:
        """Read the later pages of a prefetched Bundle, only from the FHIR server itself."""
        base = call.base
        next_url = urljoin(base + "/", next_url) if base else next_url
        if call.can_fetch and base and same_base(next_url, base):
            call.jobs[key] = self._search(next_url, key, call, base)
        else:
            call.problems.append(f"{KEY_LABELS[key]}: only the first prefetched page could be read")

    def _fetch(self, call: _Call, key: str, template: str) -> None:
        if not call.can_fetch or call.base is None:
            call.sources[key] = "missing"
            verb = "was" if key == "patient" else "were"
            call.problems.append(
                f"{KEY_LABELS[key]} {verb} not prefetched and the FHIR server could not be asked"
            )
            return
        query = template.replace("{{context.patientId}}", quote(call.patient_id, safe=""))
        call.jobs[key] = self._cached_search(call.base, query, key, call)

    # ------------------------------------------------------------ fetching

    def _ttl(self, expires_in: int | None) -> float:
        if self._cache is None:
            return 0.0
        ttl = float(self._settings.cache_ttl_s)
        try:
            ttl = min(ttl, float(expires_in)) if expires_in is not None else ttl
        except (TypeError, ValueError):
            return 0.0
        return max(ttl, 0.0)

    async def _run(self, call: _Call) -> dict[str, _Fetched]:
        tasks = {key: asyncio.ensure_future(job) for key, job in call.jobs.items()}
        if not tasks:
            return {}
        try:
            await asyncio.wait(tasks.values(), timeout=max(0.0, call.deadline - time.monotonic()))
        finally:
            pending = [t for t in tasks.values() if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        out: dict[str, _Fetched] = {}
        if pending:  # reads still queued for a connection wrote no `fhir read` line of their own
            log.warning(
                "fhir reads unfinished at the deadline: %s",
                ",".join(sorted({searched_type(k) for k, t in tasks.items() if t in pending})),
            )
        for key, t in tasks.items():
            if t.cancelled():
                out[key] = _Fetched([], error="timeout")
            elif t.exception() is not None:
                log.error("fhir read failed unexpectedly: %s", type(t.exception()).__name__)
                out[key] = _Fetched([], error="unexpected error")
            else:
                out[key] = t.result()
        return out

    async def _cached_search(self, base: str, query: str, key: str, call: _Call) -> _Fetched:
        url = f"{base}/{query}"
        if self._cache is None or call.ttl <= 0:
            return await self._search(url, key, call, base)
        ckey = (base, query, hashlib.sha256((call.token or "").encode()).hexdigest())
        cache = self._cache
        hit = await cache.get(ckey)
        metrics.count_cache("fhir", hit is not None)
        if hit is not None:
            log.info("fhir read type=%s status=cached ms=0 cache=hit", searched_type(key))
            return _Fetched(hit, cached=True)
        task = self._inflight.get(ckey)
        if task is None:

            async def fetch_and_keep() -> _Fetched:  # one fetch, one cache write, however many wait
                fetched = await self._search(url, key, call, base)
                if fetched.error is None and fetched.note is None:
                    await cache.set(ckey, fetched.resources, call.ttl)
                return fetched

            task = asyncio.ensure_future(fetch_and_keep())
            self._inflight[ckey] = task

            def _done(t: asyncio.Future[_Fetched], k: tuple[str, str, str] = ckey) -> None:
                if self._inflight.get(k) is t:
                    del self._inflight[k]
                _retrieve(t)  # a failure is reported through its waiters

            task.add_done_callback(_done)
        return await asyncio.shield(task)

    async def _search(self, url: str, key: str, call: _Call, base: str) -> _Fetched:
        """Every page of a search (or the one resource of a read) from `url` on, within the page limit."""
        resources: list[Any] = []
        max_pages = self._settings.fhir_max_pages
        pages = 0
        next_url: str | None = url
        while next_url is not None:
            if pages >= max_pages:
                return _Fetched(
                    resources, note=f"more than {max_pages} pages; only the first {max_pages} were read"
                )
            try:
                body = await self._page(next_url, key, call)
            except _Unreadable as exc:
                if pages == 0:
                    return _Fetched([], error=exc.reason)
                return _Fetched(resources, note=f"later pages could not be read ({exc.reason})")
            pages += 1
            rtype = body.get("resourceType")
            if rtype == "Bundle" and (found := bundle_resources(body)) is not None:
                resources.extend(found)
            elif isinstance(rtype, str) and rtype in KEY_TYPES[key] and pages == 1:
                return _Fetched([body])
            else:
                reason = (
                    "the server answered with an OperationOutcome"
                    if rtype == "OperationOutcome"
                    else "unexpected response"
                )
                if pages == 1:
                    return _Fetched([], error=reason)
                return _Fetched(resources, note=f"later pages could not be read ({reason})")
            next_url = next_link(body)
            if next_url is not None:
                next_url = urljoin(base + "/", next_url)
                if not same_base(next_url, base):
                    return _Fetched(
                        resources, note="a next-page link outside the FHIR server was not followed"
                    )
        return _Fetched(resources)

    async def _page(self, url: str, key: str, call: _Call) -> dict[str, Any]:
        headers = {"Accept": "application/fhir+json"}
        if call.token:
            headers["Authorization"] = f"Bearer {call.token}"
        async with call.semaphore:
            remaining = call.deadline - time.monotonic()
            if remaining <= 0:
                raise _Unreadable("timeout", "timeout")
            limit = min(float(self._settings.fhir_timeout_s), remaining)
            started = time.monotonic()
            status: list[str] = ["-"]
            error: str | None = None
            try:
                # The GET runs in its own task that is never cancelled: we stop waiting at `limit` (or
                # when the deadline cancels us) and httpx's own timeouts plus the deadline check in
                # _get end it a little later, closing its connection properly. Cancelling a request
                # inside httpx leaks pool slots (httpcore 1.0.9, encode/httpcore#1093, #830): after an
                # overload whose reads were cut off at the deadline, every later read waited for a
                # slot that never came (bench: 412 after a FHIR server restart; the pool was full of
                # CONNECTING and ACTIVE connections nobody owned).
                get = asyncio.ensure_future(self._get(url, headers, limit, status))
                get.add_done_callback(_retrieve)
                return await asyncio.wait_for(asyncio.shield(get), timeout=limit)
            except _Unreadable as exc:
                error = exc.kind
                raise
            except asyncio.CancelledError:  # the overall deadline ended the read
                status[0], error = "deadline", "timeout"
                raise
            except (TimeoutError, httpx.TimeoutException):
                status[0] = "timeout"
                error = "timeout"
                raise _Unreadable("timeout", "timeout") from None
            except httpx.HTTPError as exc:
                status[0] = type(exc).__name__
                error = "connect"
                raise _Unreadable("connection failed", "connect") from None
            finally:
                seconds = time.monotonic() - started
                log.info(
                    "fhir read type=%s status=%s ms=%.0f cache=miss",
                    searched_type(key),
                    status[0],
                    seconds * 1000,
                )
                metrics.observe_fhir_fetch(searched_type(key), seconds, error)

    async def _get(
        self, url: str, headers: dict[str, str], limit: float, status: list[str]
    ) -> dict[str, Any]:
        stop = time.monotonic() + limit  # the caller stops waiting then; so does this read
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot is taken at once: no task or timer for the wait
        else:
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=limit)
            except TimeoutError:
                raise _Unreadable("timeout", "timeout") from None
        try:
            return await self._get_in_slot(url, headers, max(0.001, stop - time.monotonic()), stop, status)
        finally:
            self._slots.release()

    async def _get_in_slot(
        self, url: str, headers: dict[str, str], limit: float, stop: float, status: list[str]
    ) -> dict[str, Any]:
        cap = int(self._settings.fhir_max_response_bytes)
        request = self._http.build_request("GET", url, headers=headers, timeout=httpx.Timeout(limit))
        response = await self._http.send(request, stream=True, follow_redirects=False)
        try:
            status[0] = str(response.status_code)
            code = response.status_code
            if 300 <= code < 400:
                raise _Unreadable(f"redirect not followed, HTTP {code}", "redirect")
            if code in (401, 403):
                raise _Unreadable(f"access refused, HTTP {code}", "refused")
            if code >= 400 or code < 200:
                raise _Unreadable(f"HTTP {code}", "http-error")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise _Unreadable("response too large", "too-large")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    raise _Unreadable("response too large", "too-large")
                if time.monotonic() > stop:  # a slow drip: give up, as the caller already has
                    raise _Unreadable("timeout", "timeout")
        finally:
            await response.aclose()
        try:
            data = json_loads(body)
        except (ValueError, RecursionError):
            raise _Unreadable("invalid JSON", "invalid-json") from None
        if not isinstance(data, dict):
            raise _Unreadable("unexpected response", "unexpected")
        return data


_ABSENT: Any = object()
_POOL_RESERVED = 4  # pool slots FhirReader leaves to the app's other users of the client (JWKS)


def _merge(call: _Call, key: str, fetched: _Fetched) -> None:
    """A finished read into the call: its resources, source, and any problem in card words."""
    label = KEY_LABELS[key]
    continuation = call.sources.get(key) == "prefetch"  # the later pages of a prefetched Bundle
    if fetched.error is not None:
        if continuation:
            call.problems.append(f"{label}: only the first prefetched page could be read ({fetched.error})")
        else:
            call.sources[key] = "error"
            call.problems.append(f"{label} could not be read from the FHIR server ({fetched.error})")
        return
    call.collected[key] = call.collected.get(key, []) + key_resources(key, fetched.resources)
    if not continuation:
        call.sources[key] = "cache" if fetched.cached else "fhir"
    if fetched.note is not None:
        call.problems.append(f"{label}: {fetched.note}")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done callback of an abandoned GET: its outcome was reported (or not needed); no asyncio warning."""
    if not task.cancelled():
        task.exception()
