"""openapi.yaml is what the app serves (regenerate: python scripts/gen_openapi.py); the pml-plex schema is pinned."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml

from cds.app import create_app
from cds.hooks.openapi import PML_PLEX_EXTENSION
from cds.settings import Settings
from tests.hooks.checks import ROOT

OUR_PATHS = (
    "/cds-services",
    "/cds-services/{service_id}",
    "/cds-services/{service_id}/feedback",
    "/healthz",
    "/readyz",
)
HINT = "openapi.yaml drifted from the app: run `.venv/bin/python scripts/gen_openapi.py` and commit it"


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def served() -> dict[str, Any]:
    app = create_app(Settings(_env_file=None, auth="off", demo=False, natalizumab_level_codes=[]))
    # through YAML, as the committed file went, so that types (tuples, ints as keys) compare equal
    return yaml.safe_load(yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True))


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                found.add(v.rsplit("/", 1)[-1])
            else:
                found |= _refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= _refs(v)
    return found


def test_our_paths_match(committed: dict[str, Any], served: dict[str, Any]) -> None:
    for path in OUR_PATHS:
        assert committed["paths"].get(path) == served["paths"][path], f"{path}: {HINT}"


def test_our_schemas_match(committed: dict[str, Any], served: dict[str, Any]) -> None:
    names = _refs({p: served["paths"][p] for p in OUR_PATHS}) | {
        "PmlPlexExtension",
        "HookRequest",
        "FeedbackRequest",
    }
    schemas = served["components"]["schemas"]
    todo = set(names)
    while todo:
        n = todo.pop()
        new = _refs(schemas[n]) - names
        names |= new
        todo |= new
    for name in sorted(names):
        assert committed["components"]["schemas"].get(name) == schemas[name], f"schema {name}: {HINT}"


def test_every_served_path_is_documented(committed: dict[str, Any], served: dict[str, Any]) -> None:
    missing = sorted(set(served["paths"]) - set(committed["paths"]))
    assert not missing, f"undocumented paths {missing}: {HINT}"


def test_pml_plex_schema_is_pinned(committed: dict[str, Any]) -> None:
    assert committed["components"]["schemas"]["PmlPlexExtension"] == yaml.safe_load(
        yaml.safe_dump(PML_PLEX_EXTENSION)
    )
    card = committed["components"]["schemas"]["Card"]
    assert card["properties"]["extension"]["properties"]["pml-plex"] == {
        "$ref": "#/components/schemas/PmlPlexExtension"
    }


VALID = [
    {
        "kind": "plex-estimate",
        "basis": "measured",
        "conclusion": "sessions-needed",
        "flags": ["upper-bound"],
        "unusable": [{"kind": "natalizumab level", "code": "specimen"}],
        "latestLevel": {
            "value": 25.0,
            "adjusted": 24.1,
            "unit": "ug/mL",
            "date": "2024-05-01T10:00:00Z",
            "comparator": "<",
        },
        "target": {"value": 1.0, "unit": "ug/mL"},
        "sessionsCompleted": 0,
        "remainingSessions": {"estimate": 5, "low": 5, "high": 7},
        "orderedSessions": 5,
    },
    {
        "kind": "plex-estimate",
        "basis": "dosing-history",
        "conclusion": "sessions-needed",
        "latestLevel": {"adjusted": 40.0, "unit": "ug/mL"},
        "target": {"value": 1.0, "unit": "ug/mL"},
        "sessionsCompleted": 0,
        "remainingSessions": {"estimate": 6, "low": 5, "high": 9},
    },
    {
        "kind": "plex-estimate",
        "basis": "none",
        "conclusion": "measure-first",
        "target": {"value": 1.0, "unit": "ug/mL"},
        "sessionsCompleted": 2,
    },
    {
        "kind": "iris",
        "risk": "high",
        "severeIrisRisk": "raised",
        "irisOnRecord": False,
        "reasons": ["brainstem"],
    },
    {"kind": "iris", "risk": "standard"},
    {
        "kind": "dmt",
        "allowed": ["glatiramer acetate"],
        "conditional": ["dimethyl fumarate"],
        "avoid": ["fingolimod"],
        "activeConflicts": ["fingolimod"],
    },
]


def _invalid() -> list[dict[str, Any]]:
    out = []
    e = copy.deepcopy(VALID[0])
    e["latestLevel"]["unit"] = "mg/L"
    out.append(e)
    e = copy.deepcopy(VALID[0])
    e["remainingSessions"]["estimate"] = -1
    out.append(e)
    e = copy.deepcopy(VALID[0])
    e["extra"] = 1
    out.append(e)
    out.append({"kind": "iris", "risk": "medium"})
    out.append({"kind": "dmt", "allowed": ["Fingolimod"]})  # lower-case names only
    out.append({"kind": "other"})
    e = copy.deepcopy(VALID[0])
    del e["target"]
    out.append(e)
    return out


@pytest.mark.parametrize("payload", VALID)
def test_schema_accepts(committed: dict[str, Any], payload: dict[str, Any]) -> None:
    jsonschema.validate(payload, committed["components"]["schemas"]["PmlPlexExtension"])


@pytest.mark.parametrize("payload", _invalid())
def test_schema_rejects(committed: dict[str, Any], payload: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, committed["components"]["schemas"]["PmlPlexExtension"])
