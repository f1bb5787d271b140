"""Generic test plumbing only; feature folders keep their own conftest.py beside their tests."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest


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
