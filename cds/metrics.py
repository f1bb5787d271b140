"""Prometheus metrics: what the service counts, and `GET /metrics` to read them.

Wiring (one line each, in the places that know the facts):
    app.add_route("/metrics", metrics.metrics_endpoint, include_in_schema=False)   # app.py
    metrics.observe_request(service_id, outcome, seconds)     # routes.py, once per hook call
    metrics.observe_fhir_fetch(resource_type, seconds, error=None)  # fhir_io.py, per FHIR read
    metrics.count_prefetch(service_id, hits, misses)          # keys answered by prefetch vs. not
    metrics.count_cache(cache, hit)                           # "fhir" read cache, "jwks", "jti" …
    metrics.count_cards(service_id, cards)                    # cards as returned (kind, indicator)
    metrics.count_feedback(service_id, outcome, n)            # accepted / overridden, new rows only
    metrics.count_audit_written(n) / count_audit_lost(reason, n)  # store.py's AuditQueue, per batch

Several worker processes (`CDS_WORKERS` > 1): every process counts on its own, so Prometheus
multiprocess mode is used when the environment variable PROMETHEUS_MULTIPROC_DIR names a writable,
empty directory *before* the workers start; `prepare_multiprocess()` does that for `cds serve`.
Each worker then writes its samples to files there, and `/metrics` in any worker sums all of them.
Only counters and histograms are used, which multiprocess mode aggregates without loss.

Label values are bounded: service ids come from the service table, outcomes and kinds from code.
No patient data, hookInstance or token ever becomes a label.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    platform_collector,
    process_collector,
)
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "MULTIPROC_ENV",
    "count_audit_lost",
    "count_audit_written",
    "count_cache",
    "count_cards",
    "count_feedback",
    "count_prefetch",
    "metrics_endpoint",
    "metrics_response",
    "observe_fhir_fetch",
    "observe_request",
    "prepare_multiprocess",
    "registry",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# One registry per process for our own metrics (never the library's global default, so importing this
# module twice in tests or next to other libraries cannot collide).
_REGISTRY = CollectorRegistry(auto_describe=True)
if not os.environ.get(MULTIPROC_ENV):
    process_collector.ProcessCollector(registry=_REGISTRY)
    platform_collector.PlatformCollector(registry=_REGISTRY)

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

REQUESTS = Counter(
    "cds_requests", "Hook calls answered, by service and outcome", ["service", "outcome"], registry=_REGISTRY
)
REQUEST_SECONDS = Histogram(
    "cds_request_duration_seconds",
    "Time to answer a hook call, by service and outcome",
    ["service", "outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=_REGISTRY,
)
FHIR_FETCH_SECONDS = Histogram(
    "cds_fhir_fetch_duration_seconds",
    "Time of one read from the EHR's FHIR server, by resource type",
    ["resource_type"],
    buckets=_LATENCY_BUCKETS,
    registry=_REGISTRY,
)
FHIR_FETCH_ERRORS = Counter(
    "cds_fhir_fetch_errors",
    "FHIR reads that failed, by resource type and reason (timeout, denied, http-5xx, invalid …)",
    ["resource_type", "reason"],
    registry=_REGISTRY,
)
PREFETCH_KEYS = Counter(
    "cds_prefetch_keys",
    "Prefetch keys the service needed, by whether the EHR sent them (hit) or they had to be read (miss)",
    ["service", "result"],
    registry=_REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "cds_cache_lookups",
    "Cache lookups by cache and result (hit, miss)",
    ["cache", "result"],
    registry=_REGISTRY,
)
CARDS = Counter(
    "cds_cards",
    "Cards returned, by service, kind and indicator",
    ["service", "kind", "indicator"],
    registry=_REGISTRY,
)
FEEDBACK = Counter(
    "cds_feedback",
    "Feedback items stored (new rows), by service and outcome",
    ["service", "outcome"],
    registry=_REGISTRY,
)
# Every metric here has labels: a label-less one is created at import, and in multiprocess mode that
# opens its file before `prepare_multiprocess` has made the directory (the container failed to start).
AUDIT_WRITTEN = Counter(
    "cds_audit_rows_written",
    "Audit rows written to the database, by how: batch, or row-by-row after the database refused a batch",
    ["how"],
    registry=_REGISTRY,
)
AUDIT_LOST = Counter(
    "cds_audit_rows_lost",
    "Audit rows that will never be written, by reason: queue-full (the database was away too long),"
    " rejected (the database refused the row), shutdown (still queued when the process stopped)",
    ["reason"],
    registry=_REGISTRY,
)


def registry() -> CollectorRegistry:
    """The registry to read: this process's, or in multiprocess mode a fresh view over all workers."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return _REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected, path=path)  # type: ignore[no-untyped-call]
    return collected


def metrics_response() -> tuple[bytes, str]:
    """(body, content type) of the Prometheus text exposition for this service."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


async def metrics_endpoint(request: Request) -> Response:
    """Starlette/FastAPI route function for `GET /metrics` (outside JWT, like /healthz)."""
    body, content_type = metrics_response()
    return Response(body, media_type=content_type)


def prepare_multiprocess(workers: int, state_dir: Path | str) -> str | None:
    """Call in `cds serve` before uvicorn starts its workers. Returns the directory in use, if any.

    With one worker nothing changes unless PROMETHEUS_MULTIPROC_DIR is set already. With several,
    it defaults to `<state_dir>/prometheus`. The directory is emptied: samples of an earlier run
    must not be summed into this one.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if not path and workers > 1:
        path = str(Path(state_dir) / "prometheus")
    if not path:
        return None
    shutil.rmtree(path, ignore_errors=True)
    Path(path).mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = path
    return path


def observe_request(service_id: str, outcome: str, seconds: float) -> None:
    """outcome: "cards", "no-cards", or the error's stable code (bad-request, data-unavailable, …)."""
    REQUESTS.labels(service_id, outcome).inc()
    REQUEST_SECONDS.labels(service_id, outcome).observe(seconds)


def observe_fhir_fetch(resource_type: str, seconds: float, error: str | None = None) -> None:
    FHIR_FETCH_SECONDS.labels(resource_type).observe(seconds)
    if error:
        FHIR_FETCH_ERRORS.labels(resource_type, error).inc()


def count_prefetch(service_id: str, hits: int, misses: int) -> None:
    """Hit ratio in PromQL: rate(cds_prefetch_keys_total{result="hit"}[5m]) / rate(cds_prefetch_keys_total[5m])."""
    if hits:
        PREFETCH_KEYS.labels(service_id, "hit").inc(hits)
    if misses:
        PREFETCH_KEYS.labels(service_id, "miss").inc(misses)


def count_cache(cache: str, hit: bool) -> None:
    CACHE_LOOKUPS.labels(cache, "hit" if hit else "miss").inc()


def count_cards(service_id: str, cards: Iterable[Any]) -> None:
    """Cards as dicts or models; kind comes from the `pml-plex` extension's `kind`, else "other"."""
    for card in cards:
        data: Mapping[str, Any] = card if isinstance(card, Mapping) else _as_dict(card)
        ext = data.get("extension") or {}
        kind = (ext.get("pml-plex") or {}).get("kind") if isinstance(ext, Mapping) else None
        CARDS.labels(service_id, str(kind or "other"), str(data.get("indicator") or "info")).inc()


def count_feedback(service_id: str, outcome: str, n: int = 1) -> None:
    if n > 0:
        FEEDBACK.labels(service_id, outcome).inc(n)


def count_audit_written(n: int, how: str = "batch") -> None:
    """how: "batch", or "row-by-row" after the database refused a batch."""
    if n > 0:
        AUDIT_WRITTEN.labels(how).inc(n)


def count_audit_lost(reason: str, n: int = 1) -> None:
    """reason: "queue-full", "rejected" or "shutdown" (a bounded set, chosen by cds.store)."""
    if n > 0:
        AUDIT_LOST.labels(reason).inc(n)


def _as_dict(card: Any) -> Mapping[str, Any]:
    dump = getattr(card, "model_dump", None)
    if callable(dump):
        result = dump(by_alias=True, exclude_none=True)
        return result if isinstance(result, Mapping) else {}
    return {}
