"""cds/fhir/ is the pure mapping of FHIR into the engine's facts: no module in it may do I/O or reach
the reading side (cds/fhir_io.py, cds/fhir_cache.py) or the web layer. Checked on the imports with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_package_modules_are_found() -> None:
    names = {p.name for p in FILES}
    assert {"shapes.py", "terms.py", "values.py", "facts.py", "orders.py", "r4b.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_io_or_reader_imports(path: Path) -> None:
    for module in _imports(path):
        for bad in FORBIDDEN:
            assert not (module == bad or module.startswith(bad + ".")), f"{path.name} imports {module}"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import httpx\nfrom cds.fhir_io import FhirReader\n")
    assert _imports(bad) == {"httpx", "cds.fhir_io"}
