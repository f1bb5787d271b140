"""Request bodies for the benchmark, built from the demo patient builder and the service's own templates.

The packaged demo scenarios are small (one or two levels each). The performance issue asks for a
realistic prefetch: about 10 natalizumab levels, 5 PLEX procedures, 10 medications, 3 conditions and
5 lymphocyte counts. `realistic_patient()` builds exactly that with the demo builder (so resources have
the same shapes, codes and units as the demo patients), and `hook_request()` resolves the full
prefetch through the service's own templates (cds.demo.hook_request). The "large" variant has ten
times the levels, medications and procedures (copies with new ids, placed 1..9 years further back).

Every body is written with placeholders that the wrk script replaces per request: `@@HOOK_INSTANCE@@`
always, `@@TOKEN@@` where each request must carry a new access token (cold fallback).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cds import demo
from cds.demo.builder import FRONTAL, PatientBuilder

BENCH_PID = "bench-realistic"
LARGE_PID = "bench-large"


def _shift(value: str, days: float) -> str:
    t = datetime.fromisoformat(value) - timedelta(days=days)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shift_dates(obj: Any, days: float) -> Any:
    """Every FHIR dateTime string (YYYY-MM-DDThh:mm:ssZ) in obj moved `days` into the past."""
    if isinstance(obj, dict):
        return {k: _shift_dates(v, days) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shift_dates(v, days) for v in obj]
    if isinstance(obj, str) and len(obj) == 20 and obj[4] == "-" and obj[10] == "T" and obj.endswith("Z"):
        return _shift(obj, days)
    return obj


def realistic_patient(now: datetime, pid: str = BENCH_PID) -> demo.DemoPatient:
    """10 natalizumab levels, 5 PLEX procedures, 10 medications, 3 conditions, 5 lymphocyte counts."""
    b = PatientBuilder(pid, now)
    b.patient("Benedikt", "Harrowgate", "male", 42)
    b.ms()
    b.pml(
        13,
        [(FRONTAL, "Right frontal lobe")],
        "Right frontal subcortical T2/FLAIR lesion, unilobar; no gadolinium enhancement",
    )
    b.condition(("37796009", "Migraine (disorder)"), "Migraine without aura", 15 * 365.25)
    b.antibodies(60, positive=False)
    for d, v in [(1, 1.9), (3.1, 4.2), (11.1, 31)]:  # around the current course
        b.level(d, v, note="Pre-session sample" if d > 1 else None)
    for i in range(7):  # trough levels while on natalizumab, every 4 weeks before PML
        b.level(40 + 28 * i, 30 + (i * 7) % 11)
    b.plex_done(11, 9, 7, 5, 3)
    for d, v in [(2, 1.6), (30, 2.1), (90, 2.3), (180, 2.0), (270, 1.9)]:
        b.lymphocytes(d, v)
    b.natalizumab(15)  # MedicationStatement + MedicationRequest
    b.statement(
        "glatiramer acetate", "Copaxone (glatiramer acetate) 20 mg SC daily", 6 * 365.25, status="completed"
    )
    b.statement("cholecalciferol", "Vitamin D3 2000 IU orally daily", 5 * 365.25)
    b.statement("baclofen", "Baclofen 10 mg orally three times daily", 2 * 365.25)
    b.statement("pantoprazole", "Pantoprazole 40 mg orally daily", 300)
    b.request("paracetamol", "Paracetamol 1 g orally as needed, max 4 g/day", 200)
    b.request("sumatriptan", "Sumatriptan 50 mg orally as needed for migraine", 400)
    b.request("baclofen", "Baclofen 10 mg orally three times daily", 60)
    b.request("cholecalciferol", "Vitamin D3 2000 IU orally daily", 120)
    b.plex_order(3)
    return demo.DemoPatient(
        name="bench-realistic",
        patient_id=pid,
        title="Benchmark patient",
        description="realistic prefetch for the benchmark",
        resources=b.resources,
        draft_order=b.draft_order,
        expected={},
    )


def large_patient(now: datetime, factor: int = 10) -> demo.DemoPatient:
    """The realistic patient with `factor` times the levels, medications and procedures (new ids)."""
    base = realistic_patient(now, LARGE_PID)
    out = list(base.resources)
    for r in base.resources:
        replicate = r["resourceType"] in ("MedicationStatement", "MedicationRequest", "Procedure") or (
            r["resourceType"] == "Observation" and "-ntz-" in r["id"]
        )
        if not replicate:
            continue
        for k in range(1, factor):
            c = _shift_dates(copy.deepcopy(r), 365.25 * k)
            c["id"] = f"{r['id']}-x{k}"
            out.append(c)
    return demo.DemoPatient(
        name="bench-large",
        patient_id=LARGE_PID,
        title="Benchmark patient x10",
        description="10x resources",
        resources=out,
        draft_order=base.draft_order,
        expected={},
    )


def counts(p: demo.DemoPatient) -> dict[str, int]:
    c: dict[str, int] = {}
    for r in p.resources:
        key = r["resourceType"]
        if key == "Observation":
            key = (
                "Observation:" + r["id"].split("-")[-2]
                if "-x" not in r["id"]
                else "Observation:" + r["id"].split("-")[-3]
            )
        c[key] = c.get(key, 0) + 1
    return c


def hook_body(
    p: demo.DemoPatient,
    hook: str,
    *,
    prefetch: bool = True,
    settings: Any = None,
    fhir_server: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    body = demo.hook_request(
        p, hook, prefetch=prefetch, settings=settings, fhir_server=fhir_server, token=token
    )  # type: ignore[arg-type]
    body["hookInstance"] = "@@HOOK_INSTANCE@@"
    return body


def with_n_labs(body: dict[str, Any], n: int) -> dict[str, Any]:
    """The body with exactly `n` Observations in the `labs` prefetch bundle (levels copied further back)."""
    out = copy.deepcopy(body)
    labs = out["prefetch"]["labs"]
    entries = list(labs.get("entry", []))
    levels = [e for e in entries if "-ntz-" in e["resource"]["id"]]
    k = 0
    while len(entries) < n:
        src = levels[k % len(levels)]
        k += 1
        c = copy.deepcopy(src)
        c["resource"] = _shift_dates(c["resource"], 28 * (k + 10))
        c["resource"]["id"] = f"{src['resource']['id']}-s{k}"
        c["fullUrl"] = c["fullUrl"].rsplit("/", 1)[0] + "/" + c["resource"]["id"]
        entries.append(c)
    labs["entry"] = entries[:n]
    labs["total"] = n
    return out


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def prefetch_counts(body: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, v in (body.get("prefetch") or {}).items():
        out[key] = len(v.get("entry", [])) if v.get("resourceType") == "Bundle" else 1
    return out
