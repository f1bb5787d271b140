"""cds/fhir/ is the pure mapping of FHIR into the engine's facts: no module in it may do I/O or reach
the reading side (cds/fhir_io.py, cds/fhir_cache.py) or the web layer. Checked on the imports with ast."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import module_imports

PACKAGE = Path(__file__).resolve().parents[2] / "cds" / "fhir"
FILES = sorted(PACKAGE.glob("*.py"))
FORBIDDEN = (
    "asyncio",
    "httpx",
    "redis",
    "socket",
    "urllib",
    "requests",
    "sqlite3",
    "psycopg",
    "fastapi",
    "starlette",
    "cds.fhir_io",
    "cds.fhir_cache",
    "cds.hooks",
    "cds.views",
    "cds.store",
    "cds.outbound",
)


def test_the_package_modules_are_found() -> None:
    names = {p.name for p in FILES}
    assert {"shapes.py", "terms.py", "values.py", "facts.py", "orders.py", "r4b.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_io_or_readermodule_imports(path: Path) -> None:
    for module in module_imports(path):
        for bad in FORBIDDEN:
            assert not (module == bad or module.startswith(bad + ".")), f"{path.name} imports {module}"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import httpx\nfrom cds.fhir_io import FhirReader\n")
    assert module_imports(bad) == {"httpx", "cds.fhir_io"}
