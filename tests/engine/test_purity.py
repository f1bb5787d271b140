"""The engine is pure: no web, HTTP, FHIR or hook imports; no clock, no logging, no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.imports import module_imports

ENGINE = Path(__file__).resolve().parents[2] / "cds" / "engine"
FILES = sorted(ENGINE.glob("*.py"))
FORBIDDEN = (
    "fastapi",
    "httpx",
    "fhir",
    "starlette",
    "cds.hooks",
    "cds.fhir",
    "cds.fhir_io",
    "logging",
    "requests",
    "socket",
    "urllib",
    "os",
    "time",
    "random",
    "sqlite3",
    "pydantic",
)


def test_engine_files_found() -> None:
    names = {p.name for p in FILES}
    assert {"domain.py", "pk.py", "iris.py", "dmt.py", "drugs.py", "units.py", "__init__.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_forbiddenmodule_imports(path: Path) -> None:
    for module in module_imports(path):
        for bad in FORBIDDEN:
            assert not (module == bad or module.startswith(bad + ".")), f"{path.name} imports {module}"
        assert module.split(".")[0] in {
            "__future__",
            "functools",  # lru_cache on pure functions of text only
            "math",
            "re",
            "dataclasses",
            "datetime",
            "typing",
            "cds",
        }, module
        if module.startswith("cds"):
            assert module.startswith("cds.engine"), f"{path.name} imports {module}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_clock_or_io_calls(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute):
            assert (
                node.attr not in {"now", "utcnow", "today"}
                or not isinstance(node.ctx, ast.Load)
                or not (isinstance(node.value, ast.Name) and node.value.id in {"datetime", "date"})
            ), f"{path.name} reads the clock"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"open", "print", "input"}, f"{path.name} calls {node.func.id}"


def test_forbidden_import_is_detected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from fhir.resources.R4B.observation import Observation\nimport httpx\n")
    assert module_imports(bad) == {"fhir.resources.R4B.observation", "httpx"}


def test_public_api_is_exported() -> None:
    from cds import engine

    for name in (
        "estimate_remaining",
        "assess_iris",
        "advise_dmt",
        "identify",
        "drug_class",
        "has_natalizumab_exposure",
        "to_ug_per_ml",
    ):
        assert name in engine.__all__ and callable(getattr(engine, name))
    assert sorted(engine.__all__) == engine.__all__
