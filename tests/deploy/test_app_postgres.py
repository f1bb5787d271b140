"""The real service with CDS_DATABASE_URL on the local PostgreSQL: two replicas, one database."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from cds import demo
from cds.settings import Settings
from tests.support.servers import serve_service


def _settings(pg_dsn: str, tmp_path: Path, name: str) -> Settings:
    return Settings(auth="off", database_url=pg_dsn, state_dir=tmp_path / name, _env_file=None)  # type: ignore[call-arg]


def test_two_replicas_share_feedback_and_audit_in_postgres(pg_dsn: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(serve_service(_settings(pg_dsn, tmp_path, "a")))
        b = stack.enter_context(serve_service(_settings(pg_dsn, tmp_path, "b")))
        with httpx.Client(timeout=30) as http:
            assert http.get(f"{a}/readyz").status_code == 200
            assert http.get(f"{b}/readyz").status_code == 200
            services = [s["id"] for s in http.get(f"{a}/cds-services").json()["services"]]
            select = next(s for s in services if "select" in s)
            # a hook call on each replica: both audit events land in the one database
            body = demo.hook_request(demo.patient("high-level", datetime.now(UTC)), "order-select")
            instances = []
            for base in (a, b):
                body = {**body, "hookInstance": str(uuid.uuid4())}
                instances.append(body["hookInstance"])
                assert http.post(f"{base}/cds-services/{select}", json=body).status_code == 200
            # the EHR sends the same feedback to both replicas (a retry behind a load balancer)
            feedback = {
                "feedback": [
                    {
                        "card": str(uuid.uuid4()),
                        "outcome": "overridden",
                        "overrideReason": {"userComment": "discussed with the patient"},
                        "outcomeTimestamp": "2026-01-05T10:00:00Z",
                    }
                ]
            }
            for base in (a, b, a):
                assert http.post(f"{base}/cds-services/{select}/feedback", json=feedback).status_code == 200
    with psycopg.connect(pg_dsn) as conn:
        n_feedback = conn.execute("SELECT count(*) FROM cds_feedback").fetchone()
        audited = conn.execute(
            "SELECT hook_instance, service_id FROM cds_audit WHERE hook_instance = ANY(%s)", (instances,)
        ).fetchall()
        events = [r[0] for r in conn.execute("SELECT event::text FROM cds_audit").fetchall()]
    assert n_feedback == (1,)
    assert sorted(audited) == sorted((i, select) for i in instances)
    patient_id = body["context"]["patientId"]
    assert events and not any(patient_id in e for e in events), "no patient identifiers in the audit trail"
