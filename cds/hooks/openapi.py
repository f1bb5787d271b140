"""OpenAPI additions: request-body schemas (the routes read bodies themselves), OperationOutcome, and
the JSON Schema of the `pml-plex` card extension (pinned by tests and committed in openapi.yaml)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from cds.hooks import routes
from cds.hooks.models import FeedbackRequest, HookRequest

_RANGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["estimate", "low", "high"],
    "properties": {
        "estimate": {"type": "integer", "minimum": 0},
        "low": {"type": "integer", "minimum": 0},
        "high": {"type": "integer", "minimum": 0},
    },
}
_NAMES = {"type": "array", "items": {"type": "string", "pattern": "^[^A-Z]+$", "minLength": 1}}
_CODES = {"type": "array", "items": {"type": "string", "pattern": "^[a-z0-9-]+$", "minLength": 1}}

PML_PLEX_EXTENSION: dict[str, Any] = {
    "title": "PmlPlexExtension",
    "description": "Machine-readable card summary under card.extension['pml-plex'] (empty lists are omitted).",
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "basis", "conclusion", "target", "sessionsCompleted"],
            "properties": {
                "kind": {"const": "plex-estimate"},
                "basis": {"enum": ["measured", "dosing-history", "none"]},
                # "at-or-below-target" only from the safety invariant (docs/safety.md); with
                # "measure-first" remainingSessions is absent
                "conclusion": {"enum": ["sessions-needed", "at-or-below-target", "measure-first"]},
                "flags": _CODES,
                "unusable": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["kind", "code"],
                        "properties": {
                            "kind": {"type": "string"},
                            "code": {"type": "string", "minLength": 1},
                        },
                    },
                },
                "latestLevel": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["unit"],
                    "properties": {
                        "value": {"type": "number", "minimum": 0},
                        "adjusted": {"type": "number", "minimum": 0},
                        "unit": {"const": "ug/mL"},
                        "date": {"type": "string", "format": "date-time"},
                        "comparator": {"enum": ["<", "<=", ">", ">="]},
                    },
                },
                "target": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["value", "unit"],
                    "properties": {
                        "value": {"type": "number", "exclusiveMinimum": 0},
                        "unit": {"const": "ug/mL"},
                    },
                },
                "sessionsCompleted": {"type": "integer", "minimum": 0},
                "remainingSessions": _RANGE,
                "orderedSessions": {"type": "integer", "minimum": 0},
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "risk"],
            "properties": {
                "kind": {"const": "iris"},
                "risk": {"enum": ["high", "standard"]},
                "severeIrisRisk": {"enum": ["raised", "not-raised"]},
                "irisOnRecord": {"type": "boolean"},
                "reasons": _CODES,
                "watchFrom": {"type": "string", "format": "date"},
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind"],
            "properties": {
                "kind": {"const": "dmt"},
                "allowed": _NAMES,
                "conditional": _NAMES,
                "avoid": _NAMES,
                "activeConflicts": _NAMES,
                "blockedBy": {"type": "array", "items": {"enum": ["pregnancy", "breastfeeding"]}},
                "fumarateReason": {"type": "string", "minLength": 1},
            },
        },
    ],
}

OPERATION_OUTCOME: dict[str, Any] = {
    "title": "OperationOutcome",
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "details": {"type": "object", "properties": {"text": {"type": "string"}}},
                    "diagnostics": {"type": "string"},
                },
            },
        },
    },
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    documented = [*app.routes, routes.HOOK_CALL_DOC]  # the hook call is served by a plain route
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=documented)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    bad_request = {
        "description": "Invalid request (OperationOutcome)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}},
    }
    for item in schema.get("paths", {}).values():
        for op in item.values():
            responses = op.get("responses", {}) if isinstance(op, dict) else {}
            if responses.pop("422", None) is not None:  # we answer 400 with an OperationOutcome instead
                responses.setdefault("400", bad_request)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _, defs = models_json_schema(
        [(HookRequest, "validation"), (FeedbackRequest, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    for name, sub in defs.get("$defs", {}).items():
        components.setdefault(name, sub)
    components["OperationOutcome"] = OPERATION_OUTCOME
    components["PmlPlexExtension"] = PML_PLEX_EXTENSION
    card = components.get("Card")
    if card and "extension" in card.get("properties", {}):
        card["properties"]["extension"] = {
            "type": "object",
            "properties": {"pml-plex": {"$ref": "#/components/schemas/PmlPlexExtension"}},
        }
    return schema


def customise_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
