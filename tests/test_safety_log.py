"""docs/safety.md names a test for every control: each named test must exist (a control without a test
is not a control)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "docs" / "safety.md"
TEST_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_test_named_in_the_hazard_log_exists() -> None:
    ids = TEST_ID.findall(LOG.read_text(encoding="utf-8"))
    assert len(ids) >= 30
    missing = [
        f"{f}::{name}" for f, name in ids if not (ROOT / f).exists() or name not in _test_names(ROOT / f)
    ]
    assert not missing, missing


def test_every_hazard_row_names_at_least_one_test() -> None:
    rows = [
        line for line in LOG.read_text(encoding="utf-8").splitlines() if re.match(r"^\| \d+\.\d+ \|", line)
    ]
    assert len(rows) >= 25
    assert all(TEST_ID.search(row) for row in rows), [r for r in rows if not TEST_ID.search(r)]
