"""Every numeric constant in cds/engine appears in docs/clinical-model.md (issue 2 acceptance)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "clinical-model.md").read_text(encoding="utf-8")
FILES = sorted((ROOT / "cds" / "engine").glob("*.py"))
STRUCTURAL = {0, 1}  # loop starts, identity factors: not clinical parameters


_NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)?(?![\d])")


def _number_in(text: str, value: float) -> bool:
    """True when `text` writes `value` as a number (0.60 counts for 0.6; 0.505 does not count for 0.5)."""
    return any(float(m) == float(value) for m in _NUMBER.findall(text))


def _slice_constants(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            ids |= {id(n) for n in ast.walk(node.slice) if isinstance(n, ast.Constant)}
    return ids


def _literals(path: Path) -> set[float]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _slice_constants(tree)
    return {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant)
        and isinstance(n.value, (int, float))
        and not isinstance(n.value, bool)
        and id(n) not in skip
        and n.value not in STRUCTURAL
    }


def _named_constants(path: Path) -> dict[str, float]:
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and target.id.isupper() and node.value is not None:
            value = node.value
            if (
                isinstance(value, ast.Constant)
                and isinstance(value.value, (int, float))
                and not isinstance(value.value, bool)
            ):
                found[target.id] = value.value
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_numeric_literal_is_documented(path: Path) -> None:
    missing = sorted(v for v in _literals(path) if not _number_in(DOC, v))
    assert not missing, f"{path.name}: {missing} not in docs/clinical-model.md"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_named_constant_has_a_table_row_with_its_value(path: Path) -> None:
    rows = [line for line in DOC.splitlines() if line.startswith("|")]
    for name, value in _named_constants(path).items():
        row = next((r for r in rows if f"`{name}`" in r), None)
        assert row is not None, f"{name} has no row in the parameter table"
        assert _number_in(row, value), f"{name} = {value} but its row says: {row}"
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) >= 4 and cells[3], f"{name}: no source in its row"


def test_checker_catches_an_undocumented_number() -> None:
    assert _number_in("t½ 11 d", 11.0)
    assert not _number_in("t½ 110 d", 11.0)
    assert not _number_in("r = 0.505", 0.5)
    assert _number_in("value 0.001 here", 0.001)


def test_named_constants_are_found() -> None:
    pk = _named_constants(ROOT / "cds" / "engine" / "pk.py")
    assert pk["HALF_LIFE_DAYS"] == 11.0 and pk["INTRAVASCULAR_FRACTION"] == 0.55 and len(pk) >= 20
