"""Issue 18 defect 9: with JWT on, a Redis outage (paused, killed, restarted) is a fault of ours:
hook calls answer 503 with an OperationOutcome, never 401 or a bare 500, and recover by themselves.

The service is `cds serve` in its own process; Redis is a redis-server of this test's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.security.procs import service_process
from tests.security.redis_proc import REDIS_SERVER, own_redis
from tests.support.jwks import SigningKey
from tests.support.servers import free_port

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")

ISS = "https://ehr.example.org"
SELECT = "/cds-services/pml-plex-select"


def _calls(base: str, key: SigningKey) -> list[httpx.Response]:
    """Discovery and a hook call, each with a fresh token (so a 401 could only be the store's doing)."""
    with httpx.Client(timeout=10) as client:
        out = []
        for path, method in (("/cds-services", "GET"), (SELECT, "POST")):
            token = key.token(iss=ISS, aud=base + path)
            out.append(
                client.request(
                    method,
                    base + path,
                    headers={"Authorization": f"Bearer {token}"},
                    json={} if method == "POST" else None,
                )
            )
        return out


def _assert_503(responses: list[httpx.Response]) -> None:
    for resp in responses:
        assert resp.status_code == 503, (resp.request.url, resp.status_code, resp.text)
        body = resp.json()
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"] == "transient"


def _assert_up(responses: list[httpx.Response]) -> None:
    discovery, hook = responses
    assert discovery.status_code == 200, discovery.text
    assert hook.status_code == 400, hook.text  # authenticated; the empty body is then refused


def test_redis_paused_killed_restarted(tmp_path: Path) -> None:
    key = SigningKey.generate()
    port = free_port()
    with own_redis(tmp_path) as redis:
        env = {
            "CDS_AUTH": "jwt",
            "CDS_JWT_ISSUERS": json.dumps({ISS: {"jwks": {"keys": [key.public_jwk]}}}),
            "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "CDS_STATE_DIR": str(tmp_path),
            "CDS_REDIS_URL": redis.url,
        }
        with service_process(env, tmp_path / "svc.log", port=port) as svc:
            _assert_up(_calls(svc.base, key))

            redis.pause()
            try:
                _assert_503(_calls(svc.base, key))
            finally:
                redis.resume()
            _assert_up(_calls(svc.base, key))

            redis.kill()
            _assert_503(_calls(svc.base, key))

            redis.start()  # same port, empty (no persistence)
            _assert_up(_calls(svc.base, key))
        log = (tmp_path / "svc.log").read_text()
        assert "jti replay store unavailable" in log
