"""Protocol checks shared by the hook tests: CDS Hooks 2.0 JSON rules and checklist P0 items 4-7."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def empties(value: Any, path: str = "$") -> list[str]:
    """Every path holding null, "", [] or {} (CDS Hooks: SHALL NOT be null or empty)."""
    found: list[str] = []
    if value is None or value == "" or value == [] or value == {}:
        return [path]
    if isinstance(value, dict):
        for k, v in value.items():
            found += empties(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += empties(v, f"{path}[{i}]")
    return found


def assert_no_empty_response(body: dict[str, Any]) -> None:
    """P0-4: no null/""/[]/{} anywhere, except the top-level `cards: []`."""
    assert isinstance(body, dict) and isinstance(body.get("cards"), list), body
    rest = {k: v for k, v in body.items() if k != "cards"}
    bad = empties(rest) if rest else []
    for i, card in enumerate(body["cards"]):
        bad += empties(card, f"$.cards[{i}]")
    assert not bad, f"empty or null values at {bad}"


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def check_card(card: dict[str, Any]) -> None:
    """P0-5, 6, 7 for one card."""
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) <= 139, card["summary"]
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["source"]["label"]
    assert _is_uuid(card["uuid"])
    if "suggestions" in card:
        assert card["selectionBehavior"] in ("at-most-one", "any")
        if card["selectionBehavior"] == "at-most-one":
            assert sum(1 for s in card["suggestions"] if s.get("isRecommended")) <= 1
        for s in card["suggestions"]:
            assert s["label"] and _is_uuid(s["uuid"])
            for a in s.get("actions", []):
                assert a["type"] in ("create", "update", "delete")
                assert a["description"]
                if a["type"] in ("create", "update"):
                    assert isinstance(a["resource"], dict) and a["resource"]["resourceType"]
                else:
                    assert "/" in a["resourceId"]
    for link in card.get("links", []):
        assert link["type"] in ("absolute", "smart")
        assert link["label"] and link["url"].startswith(("http://", "https://"))
        if "appContext" in link:
            assert link["type"] == "smart"
    for reason in card.get("overrideReasons", []):
        assert reason["code"] and reason["system"] and reason["display"]
    for key in ("url", "icon"):
        if key in card["source"]:
            assert card["source"][key].startswith(("http://", "https://"))


def check_response(body: dict[str, Any]) -> None:
    assert_no_empty_response(body)
    uuids = []
    for card in body["cards"]:
        check_card(card)
        uuids.append(card["uuid"])
        uuids += [s["uuid"] for s in card.get("suggestions", [])]
        if "extension" in card:
            validate_extension(card["extension"]["pml-plex"])
    assert len(uuids) == len(set(uuids)), "card and suggestion uuids must be unique"


_SCHEMA: dict[str, Any] | None = None


def extension_schema() -> dict[str, Any]:
    """The pml-plex extension schema as committed in openapi.yaml."""
    global _SCHEMA
    if _SCHEMA is None:
        doc = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
        _SCHEMA = doc["components"]["schemas"]["PmlPlexExtension"]
    return _SCHEMA


def validate_extension(payload: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.validate(payload, extension_schema(), format_checker=jsonschema.FormatChecker())


def kinds(body: dict[str, Any]) -> list[str]:
    return [c["extension"]["pml-plex"]["kind"] for c in body["cards"]]


def ext(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(
        c["extension"]["pml-plex"] for c in body["cards"] if c["extension"]["pml-plex"]["kind"] == kind
    )


def card(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in body["cards"] if c["extension"]["pml-plex"]["kind"] == kind)
