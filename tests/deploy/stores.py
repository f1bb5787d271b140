"""Throw-away PostgreSQL databases and Redis key prefixes on the real local servers.

The fixtures in conftest.py (one per test) and the replica cluster (one per module) both use these.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator


@contextlib.contextmanager
def fresh_database(pg_admin_dsn: str, stem: str = "cds_test") -> Iterator[str]:
    """The DSN of a new, empty database `{stem}_<random>`; dropped (forcibly) afterwards."""
    import psycopg

    name = f"{stem}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_key_prefix(redis_url: str, stem: str = "cds-test") -> Iterator[str]:
    """A key prefix `{stem}-<random>:` of the caller's own; its keys are deleted afterwards."""
    import redis

    prefix = f"{stem}-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
