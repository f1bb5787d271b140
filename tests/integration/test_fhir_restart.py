"""The FHIR server restarts (same port) while the service keeps running: the next fallback call must
still be answered 200 with the same cards, within the deadline (bench/results.md: it answered 412).

A real sekmet process (tests/fhir_server.sh) without server auth, so every call can carry a NEW
token and the read cache (keyed by the token) never answers; the service runs with its default
per-call timeout and deadline, as the benchmark did. Production equivalent: the EHR's FHIR server
restarts, or a load balancer closes idle keep-alive connections the service's pool still holds.
"after-overload" is the benchmark's case: 64 clients first, so reads are cut off at the deadline
under pool contention. That, not the restart, broke the service: httpcore 1.0.9 leaks a pool slot
for a request cancelled (or pool-timed-out) while it waits for a connection (encode/httpcore#1093),
the pool filled with CONNECTING connections nobody owned, and every read afterwards timed out.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds.settings import Settings
from tests.integration import service_support as svc
from tests.support.fhir import FhirServer, FhirServerUnavailable, run_fhir_server
from tests.support.servers import free_port, serve_service

HOOKS = ("order-select", "order-sign")


@contextlib.contextmanager
def _sekmet(state: Path, port: int) -> Iterator[FhirServer]:
    try:
        with run_fhir_server("sekmet", state_dir=state, port=port, token="") as server:
            yield server
    except FhirServerUnavailable as exc:
        pytest.skip(f"sekmet not installable here: {exc}")


def _call(url: str, server: FhirServer, p: Any, hook: str) -> tuple[dict[str, Any], float]:
    body = svc.without_prefetch(server, p, hook)
    body["fhirAuthorization"]["access_token"] = f"t-{secrets.token_hex(8)}"  # new token: no cache hit
    t0 = time.monotonic()
    r = httpx.post(url + svc.PATH[hook], json=body, timeout=30)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, f"{hook}: {r.status_code} after {elapsed * 1000:.0f} ms: {r.text[:1500]}"
    out = r.json()
    return out, elapsed


def _overload(url: str, server: FhirServer, p: Any, seconds: float, conc: int) -> list[int]:
    """`conc` clients calling the fallback with new tokens for `seconds` (bench: fallback-cold c=64):
    the FHIR server falls behind, the service abandons reads at its deadline."""
    stop = time.monotonic() + seconds
    statuses: list[int] = []

    def client() -> None:
        with httpx.Client(timeout=30) as c:
            while time.monotonic() < stop:
                body = svc.without_prefetch(server, p, "order-select")
                body["fhirAuthorization"]["access_token"] = f"t-{secrets.token_hex(8)}"
                statuses.append(c.post(url + svc.PATH["order-select"], json=body).status_code)

    with ThreadPoolExecutor(conc) as pool:
        for f in [pool.submit(client) for _ in range(conc)]:
            f.result()
    return statuses


@pytest.mark.parametrize("load", ["idle", "after-overload"])
def test_fallback_survives_a_fhir_server_restart(tmp_path: Path, load: str) -> None:
    port = free_port()
    state = tmp_path / "fhir"  # kept across the restart: sekmet's SQLite store keeps the data
    base = f"http://127.0.0.1:{port}/fhir"  # tests/fhir_server.sh: sekmet's base path
    settings = Settings(
        _env_file=None,
        auth="off",
        state_dir=tmp_path / "service",
        fhir_server_allowlist=[base],
    )  # default fhir_timeout_s / fhir_deadline_s, as in the benchmark
    with serve_service(settings) as url:  # one service process for the whole test
        with _sekmet(state, port) as server:
            assert server.base_url == base
            p = svc.load_demo(server, "high-level", "restart")
            before: dict[str, Any] = {}
            for _ in range(3):  # several calls: the pool keeps several keep-alive connections
                for hook in HOOKS:
                    out, _ = _call(url, server, p, hook)
                    before[hook] = svc.comparable(out)
            assert all(before.values()), before
            if load == "after-overload":
                statuses = _overload(url, server, p, 3.0, 64)
                assert 500 not in statuses
        # stopped (its keep-alive connections with it); the same server again, same port, same data
        with _sekmet(state, port) as server:
            for hook in HOOKS:
                out, elapsed = _call(url, server, p, hook)
                assert svc.comparable(out) == before[hook], hook
                assert elapsed < settings.fhir_deadline_s + 0.5, f"{hook}: {elapsed:.2f} s"
            for hook in HOOKS:  # and the calls after that
                out, _ = _call(url, server, p, hook)
                assert svc.comparable(out) == before[hook], hook
