"""The service under uvicorn on a free port (real HTTP), CDS_AUTH=off, state in tmp."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cds.settings import Settings
from tests.support.servers import serve_service


def make_settings(state_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {"auth": "off", "state_dir": state_dir, "demo": False}
    base.update(overrides)
    return Settings(_env_file=None, **base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cds-state")


@pytest.fixture(scope="module")
def settings(state_dir: Path) -> Settings:
    return make_settings(state_dir)


@pytest.fixture(scope="module")
def service(settings: Settings) -> Iterator[str]:
    with serve_service(settings) as url:
        yield url


@pytest.fixture
def client(service: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service, timeout=10) as c:
        yield c
