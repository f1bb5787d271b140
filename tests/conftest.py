"""Generic test plumbing only; feature folders keep their own conftest.py beside their tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.deploy.own_postgres import OwnPostgres


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`live` tests need a public FHIR sandbox: skipped unless CDS_TEST_FHIR_BASE names one."""
    if os.environ.get("CDS_TEST_FHIR_BASE"):
        return
    skip = pytest.mark.skip(reason="live: set CDS_TEST_FHIR_BASE to a FHIR R4 base URL (make test-live)")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def now() -> datetime:
    """The current instant in UTC, whole seconds (demo patients and engine inputs use it)."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    """A PostgreSQL server of the test module's own (fault tests pause and stop it)."""
    from tests.deploy.own_postgres import own_postgres

    with own_postgres() as server:
        yield server


@pytest.fixture
def own_dsn(own_pg: OwnPostgres) -> Iterator[str]:
    """A fresh database on `own_pg`, resumed before and after the test."""
    from tests.deploy.stores import fresh_database

    own_pg.resume()
    with fresh_database(own_pg.dsn) as dsn:
        yield dsn
    own_pg.resume()
