"""Every CDS_ setting is documented in docs/deploy.md and listed in deploy/env.example."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cds.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = sorted(f"CDS_{name.upper()}" for name in Settings.model_fields)


def test_deploy_doc_has_a_row_for_every_setting() -> None:
    rows = set(re.findall(r"^\| `(CDS_[A-Z0-9_]+)` \|", (ROOT / "docs/deploy.md").read_text(), re.MULTILINE))
    assert not set(SETTINGS) - rows, f"undocumented: {sorted(set(SETTINGS) - rows)}"
    assert not rows - set(SETTINGS), f"documented but not a setting: {sorted(rows - set(SETTINGS))}"


def test_env_example_lists_every_setting_and_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / "deploy/env.example"
    names = set(re.findall(r"^(CDS_[A-Z0-9_]+)=", path.read_text(), re.MULTILINE))
    assert names == set(SETTINGS)
    for key in [k for k in os.environ if k.startswith("CDS_")]:
        monkeypatch.delenv(key)
    settings = Settings(_env_file=path)  # type: ignore[call-arg]
    assert settings.auth == "jwt" and settings.jwt_issuers
