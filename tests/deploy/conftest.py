"""Fixtures for the deployment tests: a throw-away PostgreSQL database on the real local server."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.stores import fresh_database, redis_key_prefix

ROOT = Path(__file__).resolve().parents[2]
PG_HOST, PG_PORT = "127.0.0.1", int(os.environ.get("PG_PORT", "5432"))


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _ensure_services() -> None:
    """Start PostgreSQL and Redis from Debian's packages when they are not already answering."""
    if _answers(PG_HOST, PG_PORT) and _answers("127.0.0.1", 6379):
        return
    subprocess.run(["bash", str(ROOT / "scripts/services.sh")], check=False, timeout=600)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    psycopg = pytest.importorskip("psycopg")
    _ensure_services()
    for user in ("postgres", "root"):
        dsn = f"postgresql://{user}@{PG_HOST}:{PG_PORT}/postgres"
        try:
            with psycopg.connect(dsn, connect_timeout=3):
                return dsn
        except psycopg.OperationalError:
            continue
    pytest.skip(
        f"PostgreSQL at {PG_HOST}:{PG_PORT} cannot be reached (scripts/services.sh could not start it)"
    )


@pytest.fixture
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A new, empty database for one test; dropped afterwards."""
    with fresh_database(pg_admin_dsn) as dsn:
        yield dsn


REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("REDIS_PORT", "6379"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The local Redis (db 0); tests keep to their own key prefix (`redis_prefix`)."""
    _ensure_services()
    if not _answers(REDIS_HOST, REDIS_PORT):
        pytest.skip(
            f"Redis at {REDIS_HOST}:{REDIS_PORT} cannot be reached (scripts/services.sh could not start it)"
        )
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    with redis_key_prefix(redis_url) as prefix:
        yield prefix
