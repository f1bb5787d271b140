"""Real FHIR R4 servers for tests: start one with tests/fhir_server.sh, load resources, resolve prefetch.

    with run_fhir_server("sekmet", state_dir=tmp) as server:   # FhirServer(kind, base_url, token)
        load_resources(server, demo_patient.resources)
        prefetch = prefetch_from_server(server, prefetch_templates(settings), demo_patient.patient_id)

Installs are shared between runs under FHIR_INSTALL_DIR (default <repo>/.fhir-server, git-ignored);
every run gets its own state dir, free port and random token, so data never leak between sessions.
A public sandbox keeps everyone's data: every resource a test run stores carries ids ending in
`run_suffix(...)` (this run's RUN_ID) and the meta.tag RUN_TAG_SYSTEM|RUN_ID, on every kind of server.
A 5xx from the server raises FhirServerOutage (an AssertionError: the `live` tests skip on it).
When the server cannot be installed (no registry), `FhirServerUnavailable` is raised and the fixture
skips, unless CDS_TEST_REQUIRE_FHIR=1 (then it fails: use that in CI to catch a missing install).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "fhir_server.sh"
KINDS = ("sekmet", "medplum")
FHIR_JSON = "application/fhir+json"
RUN_TAG_SYSTEM = "https://cds-pml-plex.test/run"
RUN_ID = f"r{secrets.token_hex(4)}"  # one per test session: id suffix and meta.tag code


class FhirServerUnavailable(RuntimeError):
    """The server could not be installed here (registry unreachable, no node/python venv)."""


class FhirServerOutage(AssertionError):
    """The server answered 5xx (after retries): its failure, not ours (`live` tests skip on it)."""


class _Retrying(httpx.BaseTransport):
    """Retry 5xx answers and transport errors with backoff (public sandboxes fail now and then)."""

    def __init__(self, attempts: int, backoff_s: float = 1.0) -> None:
        self._inner = httpx.HTTPTransport()
        self._attempts = max(1, attempts)
        self._backoff_s = backoff_s

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._inner.handle_request(request)
            except httpx.TransportError:
                if attempt == self._attempts:
                    raise
            else:
                if response.status_code < 500 or attempt == self._attempts:
                    return response
                response.close()
            time.sleep(self._backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._inner.close()


@dataclass(frozen=True)
class FhirServer:
    kind: str  # "sekmet" | "medplum" | "live"
    base_url: str  # no trailing slash
    token: str | None = None
    state_dir: Path | None = None
    startup_s: float = 0.0  # script wall time (install + start) for this run
    attempts: int = 1  # tries per request from the test helpers (a public sandbox gets retries)
    timeout_s: float = 30.0

    def headers(self) -> dict[str, str]:
        h = {"Accept": FHIR_JSON}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def client(self, timeout: float | None = None) -> httpx.Client:
        transport = _Retrying(self.attempts) if self.attempts > 1 else None
        return httpx.Client(headers=self.headers(), timeout=timeout or self.timeout_s, transport=transport)


def live_server_from_env(timeout_s: float = 60.0) -> FhirServer | None:
    """The public sandbox named by CDS_TEST_FHIR_BASE (token: CDS_TEST_FHIR_TOKEN), or None if unset."""
    base = os.environ.get("CDS_TEST_FHIR_BASE", "").strip().rstrip("/")
    if not base:
        return None
    token = os.environ.get("CDS_TEST_FHIR_TOKEN") or None
    return FhirServer(kind="live", base_url=base, token=token, attempts=3, timeout_s=timeout_s)


def _script(cmd: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), cmd],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _tail(text: str, n: int = 15) -> str:
    lines = [ln for ln in text.splitlines() if "is ignored: it is neither a file nor a directory" not in ln]
    return "\n".join(lines[-n:])


@contextlib.contextmanager
def run_fhir_server(
    kind: str,
    *,
    state_dir: Path,
    port: int | None = None,
    token: str | None = None,
    install_dir: Path | None = None,
) -> Iterator[FhirServer]:
    """Install (if needed) and start `kind` on 127.0.0.1; stop it on exit. Yields a FhirServer."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    install = install_dir or Path(os.environ.get("FHIR_INSTALL_DIR") or REPO / ".fhir-server")
    env = {
        **os.environ,
        "FHIR_SERVER": kind,
        "FHIR_PORT": str(port or free_port()),
        "FHIR_TOKEN": token if token is not None else secrets.token_urlsafe(24),
        "FHIR_STATE_DIR": str(state_dir),
        "FHIR_INSTALL_DIR": str(install),
    }
    env.pop("FHIR_RESET", None)
    t0 = time.monotonic()
    installed = _script("install", env, timeout=900)
    if installed.returncode != 0:
        raise FhirServerUnavailable(
            f"{kind} could not be installed into {install} "
            f"(exit {installed.returncode}):\n{_tail(installed.stderr)}"
        )
    started = _script("start", env, timeout=180)
    if started.returncode != 0 or not started.stdout.strip():
        _script("stop", env, timeout=60)
        raise RuntimeError(
            f"{kind} installed but did not start (exit {started.returncode}):\n{_tail(started.stderr)}"
        )
    server = FhirServer(
        kind=kind,
        base_url=started.stdout.strip().splitlines()[-1].rstrip("/"),
        token=env["FHIR_TOKEN"] or None,
        state_dir=state_dir,
        startup_s=time.monotonic() - t0,
    )
    try:
        yield server
    finally:
        _script("stop", env, timeout=60)


# ---------------------------------------------------------------- data


def with_id_suffix(resources: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    """Copies with `suffix` appended to every id and to every relative reference to those ids.

    For servers that keep data between runs (a public sandbox): the same demo patient loads under
    fresh ids each run. `reference` values of the form Type/id are rewritten when Type/id is loaded.
    """
    known = {f"{r['resourceType']}/{r['id']}" for r in resources}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            ref = out.get("reference")
            if isinstance(ref, str) and ref in known:
                out["reference"] = ref + suffix
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    renamed = [walk(r) for r in resources]
    for r in renamed:
        r["id"] = r["id"] + suffix
    return renamed


def run_suffix(stem: str) -> str:
    """An id suffix unique to this test session: `-{stem}-{RUN_ID}`."""
    return f"-{stem}-{RUN_ID}"


def with_run_tag(resources: list[dict[str, Any]], run_id: str = RUN_ID) -> list[dict[str, Any]]:
    """Copies carrying meta.tag RUN_TAG_SYSTEM|run_id (beside their own tags), to find or purge a run."""
    tag = {"system": RUN_TAG_SYSTEM, "code": run_id}
    out = []
    for r in resources:
        r = copy.deepcopy(r)
        meta = r.setdefault("meta", {})
        meta["tag"] = [t for t in meta.get("tag", []) if t.get("system") != RUN_TAG_SYSTEM] + [tag]
        out.append(r)
    return out


def suffixed(patient: Any, suffix: str) -> Any:
    """A demo.DemoPatient whose ids (patient, resources, draft order) all carry `suffix`."""
    moved = with_id_suffix([*patient.resources, patient.draft_order], suffix)
    return dataclasses.replace(
        patient, patient_id=patient.patient_id + suffix, resources=moved[:-1], draft_order=moved[-1]
    )


def transaction_bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle that PUTs each resource under its own id (idempotent on reload)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": copy.deepcopy(r),
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


def load_resources(server: FhirServer, resources: list[dict[str, Any]], *, mode: str = "auto") -> None:
    """Store `resources` (client-assigned ids) on the server: one transaction, or PUT by PUT.

    Every resource stored carries this run's meta.tag (with_run_tag).
    mode "transaction", "put" or "auto" (transaction; PUTs if the server refuses the transaction).
    Raises AssertionError naming the resource and the OperationOutcome when something is refused,
    FhirServerOutage when the server answers 5xx.
    """
    if not resources:
        return
    resources = with_run_tag(resources)
    with server.client() as http:
        if mode in ("auto", "transaction"):
            r = http.post(
                server.base_url, json=transaction_bundle(resources), headers={"Content-Type": FHIR_JSON}
            )
            _no_outage(server, r)
            if r.status_code == 200:
                body = r.json()
                bad = [
                    (res, e.get("response", {}).get("status", ""))
                    for res, e in zip(resources, body.get("entry", []), strict=False)
                    if not str(e.get("response", {}).get("status", "")).startswith(("200", "201"))
                ]
                assert body.get("type") == "transaction-response" and not bad, f"{server.kind}: {bad}"
                return
            if mode == "transaction":
                raise AssertionError(f"{server.kind}: transaction refused {r.status_code}: {r.text[:2000]}")
        for res in resources:
            r = http.put(
                f"{server.base_url}/{res['resourceType']}/{res['id']}",
                json=res,
                headers={"Content-Type": FHIR_JSON},
            )
            _no_outage(server, r)
            assert r.status_code in (200, 201), (
                f"{server.kind}: PUT {res['resourceType']}/{res['id']} -> {r.status_code}: {r.text[:2000]}"
            )


_NEXT_LIMIT = 50


def _no_outage(server: FhirServer, r: httpx.Response) -> None:
    if r.status_code >= 500:
        raise FhirServerOutage(
            f"{server.kind}: {r.request.method} {r.request.url} -> {r.status_code}: {r.text[:500]}"
        )


def _same_server(base_url: str, url: str) -> str:
    """A next link as the server wrote it; must stay on this server (never follow a link elsewhere)."""
    if not url.startswith(base_url):
        raise AssertionError(f"next link {url!r} leaves {base_url!r}")
    return url


def prefetch_from_server(server: FhirServer, templates: dict[str, str], patient_id: str) -> dict[str, Any]:
    """Resolve each prefetch template against the real server, as an EHR would before calling the hook.

    Reads give the resource (None on 404/410); searches give one searchset Bundle with every page
    merged (Bundle.link[next] followed). Anything else (401, 400) raises AssertionError, a 5xx
    FhirServerOutage.
    """
    out: dict[str, Any] = {}
    with server.client() as http:
        for key, template in templates.items():
            rel = template.replace("{{context.patientId}}", patient_id)
            assert "{{" not in rel, f"unsupported token in {template!r}"
            url = f"{server.base_url}/{rel}"
            r = http.get(url)
            _no_outage(server, r)
            if "?" not in rel:
                if r.status_code in (404, 410):
                    out[key] = None
                    continue
                assert r.status_code == 200, (
                    f"{server.kind} {key}: GET {rel} -> {r.status_code}: {r.text[:1000]}"
                )
                out[key] = r.json()
                continue
            assert r.status_code == 200, f"{server.kind} {key}: GET {rel} -> {r.status_code}: {r.text[:1000]}"
            first = r.json()
            assert first.get("resourceType") == "Bundle", f"{server.kind} {key}: not a Bundle: {r.text[:500]}"
            entries = list(first.get("entry", []))
            page = first
            for _ in range(_NEXT_LIMIT):
                nxt = [lk["url"] for lk in page.get("link", []) if lk.get("relation") == "next"]
                if not nxt:
                    break
                r = http.get(_same_server(server.base_url, nxt[0]))
                _no_outage(server, r)
                assert r.status_code == 200, f"{server.kind} {key}: next page -> {r.status_code}"
                page = r.json()
                entries += page.get("entry", [])
            else:
                raise AssertionError(f"{server.kind} {key}: more than {_NEXT_LIMIT} pages")
            bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
            if "total" in first:
                bundle["total"] = first["total"]
            bundle["link"] = [{"relation": "self", "url": url}]
            if entries:
                bundle["entry"] = entries
            out[key] = bundle
    return out


def reachable(base_url: str, timeout: float = 5.0) -> str | None:
    """None when GET {base}/metadata answers with a CapabilityStatement, else why not (for a skip)."""
    try:
        r = httpx.get(f"{base_url.rstrip('/')}/metadata", timeout=timeout, headers={"Accept": FHIR_JSON})
    except httpx.HTTPError as exc:
        return f"{base_url} unreachable: {type(exc).__name__}: {exc}"
    if r.status_code != 200:
        return f"{base_url}/metadata answered {r.status_code}"
    return None
