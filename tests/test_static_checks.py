"""Static checks stay green: `mypy --strict` on cds/ and ruff (check + format) on cds, tests, bench.

Config lives in pyproject.toml ([tool.mypy], [tool.ruff]); skipped only when a tool is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINTED = ["cds", "tests", "bench"]


def _tool(name: str) -> str:
    """The tool next to this interpreter (the venv), else on PATH; skip when neither has it."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_mypy_strict_on_cds() -> None:
    r = _run([_tool("mypy"), "--strict", "cds"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_check() -> None:
    r = _run([_tool("ruff"), "check", *LINTED])
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format() -> None:
    r = _run([_tool("ruff"), "format", "--check", *LINTED])
    assert r.returncode == 0, r.stdout + r.stderr
