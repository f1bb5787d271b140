"""Issue 18 defect 3: with JWT on, several workers must share one jti store (Redis), or `cds serve`
refuses to start; with Redis they do, and a replay to any worker is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.security.procs import ROOT, service_process
from tests.security.redis_proc import REDIS_SERVER, own_redis
from tests.support.jwks import SigningKey
from tests.support.servers import free_port

ISS = "https://ehr.example.org"


def _env(key: SigningKey, port: int, tmp: Path, **extra: str) -> dict[str, str]:
    issuers = {ISS: {"jwks": {"keys": [key.public_jwk]}}}
    return {
        "CDS_AUTH": "jwt",
        "CDS_JWT_ISSUERS": json.dumps(issuers),
        "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CDS_STATE_DIR": str(tmp),
        **extra,
    }


def test_serve_refuses_jwt_with_workers_and_no_redis(tmp_path: Path) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env = {**clean, "PYTHONPATH": str(ROOT), **_env(SigningKey.generate(), port, tmp_path, CDS_WORKERS="2")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cds", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.communicate(timeout=30)
        pytest.fail("cds serve started with JWT on, 2 workers and no shared jti store")
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "CDS_REDIS_URL" in lines[0] and "refusing to start" in lines[0]


def test_one_worker_without_redis_still_starts(tmp_path: Path) -> None:
    port = free_port()
    with service_process(_env(SigningKey.generate(), port, tmp_path), tmp_path / "svc.log", port=port) as svc:
        assert httpx.get(svc.base + "/healthz").status_code == 200


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
def test_two_workers_with_redis_refuse_every_replay(tmp_path: Path) -> None:
    key = SigningKey.generate()
    port = free_port()
    with own_redis(tmp_path) as redis:
        env = _env(key, port, tmp_path, CDS_WORKERS="2", CDS_REDIS_URL=redis.url)
        with service_process(env, tmp_path / "svc.log", port=port) as svc:
            token = key.token(iss=ISS, aud=f"{svc.base}/cds-services")
            statuses = []
            for _ in range(20):  # a new connection each time: the kernel spreads them over both workers
                with httpx.Client() as client:
                    statuses.append(
                        client.get(
                            svc.base + "/cds-services", headers={"Authorization": f"Bearer {token}"}
                        ).status_code
                    )
    assert statuses.count(200) == 1 and statuses.count(401) == 19, statuses
