"""`cds serve` on a PostgreSQL of the test's own that hangs (SIGSTOP) or is down (issue 18, defects 2
and 7): SIGTERM finishes within CDS_SHUTDOWN_TIMEOUT_S and logs the audit rows it could not write;
feedback answers 503 with an OperationOutcome within CDS_DATABASE_TIMEOUT_S, never 500 or a hang."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from cds import demo
from tests.deploy.own_postgres import OwnPostgres, wait_until
from tests.security.procs import service_process

SELECT = "/cds-services/pml-plex-select"


def _env(dsn: str, tmp_path: Path) -> dict[str, str]:
    return {
        "CDS_AUTH": "off",
        "CDS_STATE_DIR": str(tmp_path / "state"),
        "CDS_DATABASE_URL": dsn,
        "CDS_DATABASE_TIMEOUT_S": "1",
        "CDS_SHUTDOWN_TIMEOUT_S": "3",
    }


def _audited(dsn: str) -> int:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM cds_audit").fetchone()
    return int(row[0]) if row else 0


def _hook_calls(http: httpx.Client, base: str, n: int) -> None:
    body = demo.hook_request(demo.patient("high-level", datetime.now(UTC)), "order-select")
    for _ in range(n):
        r = http.post(base + SELECT, json={**body, "hookInstance": str(uuid.uuid4())})
        assert r.status_code == 200, r.text[:300]


def test_sigterm_while_postgres_hangs_ends_in_time_and_logs_the_rows_lost(
    own_pg: OwnPostgres, own_dsn: str, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with service_process(_env(own_dsn, tmp_path), log) as svc, httpx.Client(timeout=5) as http:
        _hook_calls(http, svc.base, 20)
        wait_until(lambda: _audited(own_dsn) == 20, 10, "the first 20 audit rows written")
        own_pg.pause()
        try:
            _hook_calls(http, svc.base, 30)  # answered: a hook call never waits on the audit trail
            svc.proc.terminate()
            began = time.monotonic()
            try:
                svc.proc.wait(timeout=15)  # before: never (the flush waited on the hung server)
            except subprocess.TimeoutExpired:
                pytest.fail("SIGTERM did not end the service within 15 s while PostgreSQL hung")
            took = time.monotonic() - began
        finally:
            own_pg.resume()
    assert took < 10, took  # 3 s allowance, the pool's close and uvicorn's own steps
    lost = re.findall(
        r"audit: (\d+) rows not written within the 3.0 s shutdown allowance: lost", log.read_text()
    )
    assert lost == ["30"], log.read_text()[-3000:]
    assert _audited(own_dsn) == 20  # the count is exact: none of the 30 was committed


def test_feedback_answers_503_while_postgres_hangs_or_is_down_then_recovers(
    own_pg: OwnPostgres, own_dsn: str, tmp_path: Path
) -> None:
    item = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-01-05T10:00:00Z"}
    with (
        service_process(_env(own_dsn, tmp_path), tmp_path / "serve.log") as svc,
        httpx.Client(timeout=8) as http,
    ):
        url = svc.base + SELECT + "/feedback"
        assert http.post(url, json={"feedback": [item]}).status_code == 200
        for fault in ("hung", "down"):
            if fault == "hung":
                own_pg.pause()
            else:
                own_pg.crash()
            try:
                began = time.monotonic()
                r = http.post(url, json={"feedback": [{**item, "card": str(uuid.uuid4())}]})
                took = time.monotonic() - began
            finally:
                if fault == "hung":
                    own_pg.resume()
                else:
                    own_pg.start()
            assert r.status_code == 503, (fault, r.status_code, r.text)  # before: 500 "internal", or a hang
            issue = r.json()["issue"][0]
            assert (issue["code"], issue["diagnostics"]) == ("transient", "store-unavailable"), r.text
            assert took < 5, (fault, took)  # CDS_DATABASE_TIMEOUT_S=1 (before: the pool's 10 s)
        # the server is back: feedback is stored again (the pool replaces the connections it lost)
        wait_until(
            lambda: http.post(url, json={"feedback": [item]}).status_code == 200, 10, "feedback stored again"
        )
