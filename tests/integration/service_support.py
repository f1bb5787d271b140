"""Helpers for the service-level integration tests: the service wired to a real FHIR server."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cds import demo
from cds.fhir_io import prefetch_templates
from cds.settings import Settings
from tests.support.fhir import FhirServer, load_resources, prefetch_from_server, suffixed
from tests.support.servers import serve_service

PATH = {"order-select": "/cds-services/pml-plex-select", "order-sign": "/cds-services/pml-plex-sign"}


def service_settings(server: FhirServer, state_dir: Path, *extra_allow: str) -> Settings:
    return Settings(
        _env_file=None,
        auth="off",
        state_dir=state_dir,
        fhir_server_allowlist=[server.base_url, *extra_allow],
        fhir_timeout_s=4.0,
        fhir_deadline_s=8.0,
        cache_ttl_s=0,
    )  # equivalence, not deadlines


@contextmanager
def service(server: FhirServer, state_dir: Path, *extra_allow: str) -> Iterator[tuple[str, Settings]]:
    settings = service_settings(server, state_dir, *extra_allow)
    with serve_service(settings) as url:
        yield url, settings


def load_demo(server: FhirServer, name: str, suffix: str) -> demo.DemoPatient:
    p = suffixed(demo.patient(name, datetime.now(UTC)), suffix)
    load_resources(server, p.resources)
    return p


def with_prefetch(server: FhirServer, p: demo.DemoPatient, hook: str, settings: Settings) -> dict[str, Any]:
    body = demo.hook_request(p, hook, prefetch=False)  # type: ignore[arg-type]
    body["prefetch"] = prefetch_from_server(server, prefetch_templates(settings), p.patient_id)
    return body


def without_prefetch(server: FhirServer, p: demo.DemoPatient, hook: str) -> dict[str, Any]:
    return demo.hook_request(
        p,
        hook,
        prefetch=False,
        fhir_server=server.base_url,  # type: ignore[arg-type]
        token=server.token or "no-token-needed",
    )


def comparable(body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """What two paths must agree on: indicator, summary and the pml-plex payload (adjusted rounded)."""
    out = []
    for c in body["cards"]:
        ext = dict(c["extension"]["pml-plex"])
        if "latestLevel" in ext:
            lvl = dict(ext["latestLevel"])
            if "adjusted" in lvl:
                a = lvl["adjusted"]
                lvl["adjusted"] = round(a, 2 - math.floor(math.log10(abs(a)))) if a else a
            ext["latestLevel"] = lvl
        out.append((c["indicator"], c["summary"], ext))
    return out
