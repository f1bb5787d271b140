"""Helpers for the service-level integration tests: the service wired to a real FHIR server.

with service(fhir_server, state_dir) as (url, settings):        # module fixture `running`
    p = load_demo(fhir_server, "high-level", "e2e")              # ids end in -e2e-<run id>, tagged
    out = post_hook(url, "order-select", with_prefetch(fhir_server, p, "order-select", settings), 200)
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cds import demo
from cds.fhir_io import prefetch_templates
from cds.settings import Settings
from tests.hooks.checks import check_response
from tests.support.fhir import FhirServer, load_resources, prefetch_from_server, run_suffix, suffixed
from tests.support.servers import serve_service

PATH = {"order-select": "/cds-services/pml-plex-select", "order-sign": "/cds-services/pml-plex-sign"}
# equivalence, not deadlines: generous; a public sandbox (kind "live") is slow, more generous still
FHIR_TIMEOUTS_S = {"default": (4.0, 8.0), "live": (20.0, 60.0)}  # (per call, whole hook)


def service_settings(server: FhirServer, state_dir: Path, *extra_allow: str) -> Settings:
    timeout_s, deadline_s = FHIR_TIMEOUTS_S.get(server.kind, FHIR_TIMEOUTS_S["default"])
    return Settings(
        _env_file=None,
        auth="off",
        state_dir=state_dir,
        fhir_server_allowlist=[server.base_url, *extra_allow],
        fhir_timeout_s=timeout_s,
        fhir_deadline_s=deadline_s,
        cache_ttl_s=0,
    )


@contextmanager
def service(server: FhirServer, state_dir: Path, *extra_allow: str) -> Iterator[tuple[str, Settings]]:
    settings = service_settings(server, state_dir, *extra_allow)
    with serve_service(settings) as url:
        yield url, settings


def post_hook(url: str, hook: str, body: dict[str, Any], *expected: int) -> dict[str, Any]:
    """POST a hook call; never a 500; status in `expected` (when given); a valid response either way.

    Returns the JSON body with its HTTP status under "status".
    """
    r = httpx.post(url + PATH[hook], json=body, timeout=FHIR_TIMEOUTS_S["live"][1] + 15)
    assert r.status_code != 500 and "Traceback" not in r.text, r.text
    if expected:
        assert r.status_code in expected, r.text
    out = r.json()
    if r.status_code == 200:
        check_response(out)
    else:
        assert out["resourceType"] == "OperationOutcome"
    return {"status": r.status_code, **out}


def load_demo(server: FhirServer, name: str, stem: str) -> demo.DemoPatient:
    """Demo patient `name` stored on `server` under ids ending in run_suffix(stem), run-tagged."""
    p = suffixed(demo.patient(name, datetime.now(UTC)), run_suffix(stem))
    load_resources(server, p.resources)
    return p


def _own_clinician(body: dict[str, Any]) -> dict[str, Any]:
    """Each request by a clinician of its own: an order-sign here never follows an order-select of the
    same order (what order-sign then leaves out is tested in tests/hooks/test_cards_http.py)."""
    body["context"]["userId"] = f"Practitioner/{uuid.uuid4()}"
    return body


def with_prefetch(server: FhirServer, p: demo.DemoPatient, hook: str, settings: Settings) -> dict[str, Any]:
    body = demo.hook_request(p, hook, prefetch=False)  # type: ignore[arg-type]
    body["prefetch"] = prefetch_from_server(server, prefetch_templates(settings), p.patient_id)
    return _own_clinician(body)


def without_prefetch(server: FhirServer, p: demo.DemoPatient, hook: str) -> dict[str, Any]:
    return _own_clinician(
        demo.hook_request(
            p,
            hook,
            prefetch=False,
            fhir_server=server.base_url,  # type: ignore[arg-type]
            token=server.token or "no-token-needed",
        )
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
