"""No PHI or token in logs: every line `python -m cds serve` writes during a full integration run
(JWT on, prefetch and FHIR fallback, both hooks, feedback, 401/400/412) is captured, and no patient id,
name, identifier, birth date, note text, clinician comment, EHR access token or JWT appears in it."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cds import demo
from tests.security.procs import fake_fhir_process, service_process
from tests.support.jwks import JwksServer

ISS = "https://ehr.example.org"
PUBLIC = "https://cds.example.org"


def marked_patient() -> tuple[Any, dict[str, str]]:
    """A demo patient whose identifying text is unique, so any leak is found by plain search."""
    p = demo.patient(
        "high-level" if "high-level" in demo.scenarios() else demo.scenarios()[0], datetime.now(UTC)
    )
    tag = uuid.uuid4().hex[:10]
    secrets = {
        "patient id": f"pt{tag}",
        "family name": f"Qoplent{tag}",
        "given name": f"Zyxwar{tag}",
        "identifier": f"MRN{tag}",
        "birth date": "1961-02-03",
        "condition note": f"notemarker{tag}",
        "observation text": f"obsmarker{tag}",
    }
    text = json.dumps([p.resources, p.draft_order]).replace(p.patient_id, secrets["patient id"])
    resources, order = json.loads(text)
    for r in resources:
        if r["resourceType"] == "Patient":
            r["name"] = [{"family": secrets["family name"], "given": [secrets["given name"]]}]
            r["identifier"] = [{"system": "urn:mrn", "value": secrets["identifier"]}]
            r["birthDate"] = secrets["birth date"]
        if r["resourceType"] == "Condition":
            r["note"] = [{"text": f"seen by family, {secrets['condition note']}"}]
        if r["resourceType"] == "Observation":
            r.setdefault("code", {})["text"] = f"{r['code'].get('text', 'lab')} {secrets['observation text']}"
    return dataclasses.replace(
        p, patient_id=secrets["patient id"], resources=resources, draft_order=order
    ), secrets


def test_no_phi_or_token_in_any_log_line(tmp_path: Path) -> None:
    patient, secrets = marked_patient()
    keys = JwksServer()
    key = keys.add_key("ehr", "ES384")
    access_token = f"ehrtoken{uuid.uuid4().hex}"
    secrets["access token"] = access_token
    tokens: list[str] = []

    def bearer(path: str, **kw: Any) -> dict[str, str]:
        tok = key.token(iss=ISS, aud=PUBLIC + path, jku=keys.url("ehr"), tenant="t1", **kw)
        tokens.append(tok)
        return {"Authorization": f"Bearer {tok}"}

    with keys.serve(), fake_fhir_process(patient, tmp_path) as fhir:
        env = {
            "CDS_AUTH": "jwt",
            "CDS_PUBLIC_BASE_URL": PUBLIC,
            "CDS_STATE_DIR": str(tmp_path / "state"),
            "CDS_LOG_LEVEL": "INFO",
            "CDS_JWT_ISSUERS": json.dumps(
                {
                    ISS: {
                        "jwks_url": keys.url("ehr"),
                        "allowed_jku": [keys.url("ehr")],
                        "fhir_servers": [f"{fhir}/ok/fhir", f"{fhir}/503/fhir"],
                    }
                }
            ),
        }
        log = tmp_path / "service.log"
        with service_process(env, log) as svc:
            calls = 0
            for service, hook in (("pml-plex-select", "order-select"), ("pml-plex-sign", "order-sign")):
                path = f"/cds-services/{service}"
                for body in (
                    demo.hook_request(patient, hook),  # full prefetch
                    demo.hook_request(
                        patient, hook, prefetch=False, fhir_server=f"{fhir}/ok/fhir", token=access_token
                    ),
                    demo.hook_request(
                        patient, hook, prefetch=False, fhir_server=f"{fhir}/503/fhir", token=access_token
                    ),
                    demo.hook_request(
                        patient,
                        hook,
                        prefetch=False,
                        fhir_server="https://evil.example/fhir",
                        token=access_token,
                    ),
                ):
                    r = httpx.post(svc.base + path, json=body, headers=bearer(path), timeout=15)
                    assert r.status_code in (200, 412), r.text[:300]
                    calls += 1
                # a malformed body that carries PHI: the 400 names where, never the value
                bad = demo.hook_request(patient, hook)
                bad["context"]["patientId"] = {"name": secrets["family name"]}
                assert (
                    httpx.post(svc.base + path, json=bad, headers=bearer(path), timeout=15).status_code == 400
                )
                # feedback with a clinician's free-text comment
                fb = f"{path}/feedback"
                comment = f"discussed with {secrets['given name']} {secrets['family name']}"
                item = {
                    "card": str(uuid.uuid4()),
                    "outcome": "overridden",
                    "outcomeTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "overrideReason": {"userComment": comment},
                }
                assert (
                    httpx.post(
                        svc.base + fb, json={"feedback": [item]}, headers=bearer(fb), timeout=15
                    ).status_code
                    == 200
                )
                # refused tokens: a replay and a wrong audience
                hdr = bearer(path)
                httpx.post(svc.base + path, json=demo.hook_request(patient, hook), headers=hdr, timeout=15)
                assert (
                    httpx.post(
                        svc.base + path, json=demo.hook_request(patient, hook), headers=hdr
                    ).status_code
                    == 401
                )
                assert httpx.post(svc.base + path, json={}, headers=bearer("/elsewhere")).status_code == 401
            assert httpx.get(svc.base + "/cds-services", headers=bearer("/cds-services")).status_code == 200

    text = log.read_text(errors="replace")
    assert text.strip(), "the service logged something"
    leaks = {what: value for what, value in secrets.items() if value.lower() in text.lower()}
    assert not leaks, f"PHI or secrets in the logs: {sorted(leaks)}"
    for tok in tokens:
        for part in tok.split("."):
            assert part not in text, "a JWT (or part of one) is in the logs"
    assert "pml-plex-select" in text or "hook" in text, "the log carries service ids / hook lines"
