"""Remember which resource *shapes* passed full fhir.resources R4B validation, so that the resources the
service emits (and the draft order it reacts to) are validated in full once per shape, not per request.

A shape is the resource's canonical JSON with its per-request values masked: `id`, the subject
reference (`{"reference": "Patient/<id>"}` and nothing else), and the top-level date-times `authoredOn`
and `occurrenceDateTime`. A value is masked only after it has passed a check at least as strict as R4B's
for that element (the FHIR id pattern; a full date-time with seconds and a time zone that matches the
FHIR dateTime pattern and is a real instant); otherwise there is no key and the caller validates in
full. Everything else (codes, statuses, texts, quantities, nesting, JSON types) is part of the key, so a
resource gets the cached answer only when it differs from one that R4B accepted in masked values alone.
Only successes are remembered (bounded, oldest dropped first); failures are always re-validated.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json

__all__ = [
    "MAX_SHAPES",
    "clear",
    "is_known_valid",
    "maskable",
    "parsed_json_key",
    "r4b_valid",
    "remember",
    "shape_key",
]

MAX_SHAPES = 1024

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_REF = re.compile(r"([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
# fhir_core's DateTime pattern (R4B), which the value must also match in full
_FHIR_DATETIME = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|([+\-])((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
)
_DATETIME_KEYS = ("authoredOn", "occurrenceDateTime")

_valid: dict[str | bytes, None] = {}  # insertion-ordered: the oldest shape is dropped first
# date-times that passed _datetime_ok: one request emits several resources with the same `now`
_ok_datetimes: dict[str, None] = {}
# built once: json.dumps builds an encoder per call when given options
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _datetime_ok(value: Any) -> bool:
    if type(value) is not str:
        return False
    if value in _ok_datetimes:
        return True
    if not _DATETIME.fullmatch(value) or not _FHIR_DATETIME.fullmatch(value):
        return False
    try:
        if datetime.fromisoformat(value).tzinfo is None:
            return False
    except ValueError:  # e.g. 2024-02-30
        return False
    if len(_ok_datetimes) >= MAX_SHAPES:
        _ok_datetimes.clear()
    _ok_datetimes[value] = None
    return True


def _masked(resource: Any) -> dict[str, Any] | None:
    """`resource` with its per-request values masked; None when it cannot be keyed."""
    if type(resource) is not dict or type(resource.get("resourceType")) is not str:
        return None
    masked = dict(resource)
    if "id" in masked:
        if type(masked["id"]) is not str or not _ID.fullmatch(masked["id"]):
            return None
        masked["id"] = "<id>"
    for k in _DATETIME_KEYS:
        if k in masked:
            if not _datetime_ok(masked[k]):
                return None
            masked[k] = "<dateTime>"
    subject = masked.get("subject")
    if type(subject) is dict and list(subject) == ["reference"]:
        m = _REF.fullmatch(subject["reference"]) if type(subject["reference"]) is str else None
        if m is None:
            return None
        masked["subject"] = {"reference": m.group(1) + "/<id>"}
    return masked


def maskable(resource: Any) -> bool:
    """Whether `resource` has a shape key's masks (its per-request values pass their checks), without
    encoding the key: for plain JSON values, exactly when shape_key(resource) is not None."""
    return _masked(resource) is not None


def shape_key(resource: Any) -> str | None:
    """Canonical JSON of `resource` with per-request values masked; None when it cannot be keyed."""
    masked = _masked(resource)
    if masked is None:
        return None
    try:
        return _ENCODER.encode(masked)
    except (TypeError, ValueError):  # not plain JSON data: validate in full
        return None


def parsed_json_key(resource: Any) -> bytes | None:
    """A cheaper key for a resource parsed from JSON (a draft order): the masked resource encoded by
    pydantic-core's JSON encoder, keys in the order received (a reordered copy is just another shape).

    For values parsed from JSON (str, int, float, bool, None, list, dict with str keys) the encoding is
    one-to-one, NaN and ±Infinity included (written as constants), so equal keys mean equal resources
    up to the masked values, as with shape_key. Bytes keys never equal shape_key's str keys.
    """
    masked = _masked(resource)
    if masked is None:
        return None
    try:
        return to_json(masked, inf_nan_mode="constants")
    except (TypeError, ValueError):  # pydantic_core.PydanticSerializationError is a ValueError
        return None


def is_known_valid(key: str | bytes | None) -> bool:
    return key is not None and key in _valid


def remember(key: str | bytes | None) -> None:
    """Record that a resource with this shape passed full R4B validation."""
    if key is None or key in _valid:
        return
    if len(_valid) >= MAX_SHAPES:
        del _valid[next(iter(_valid))]
    _valid[key] = None


def clear() -> None:
    _valid.clear()
    _ok_datetimes.clear()


_R4B_MODULES = {
    "Observation": "observation",
    "Procedure": "procedure",
    "Medication": "medication",
    "MedicationStatement": "medicationstatement",
    "MedicationRequest": "medicationrequest",
    "MedicationAdministration": "medicationadministration",
    "Condition": "condition",
    "ServiceRequest": "servicerequest",
    "Patient": "patient",
}


def r4b_valid(resource: dict[str, Any]) -> bool:
    """Full fhir.resources R4B validation of one resource (never the R5 top-level models)."""
    import importlib

    name = resource.get("resourceType")
    if not isinstance(name, str) or name not in _R4B_MODULES:
        return False
    cls = getattr(importlib.import_module(f"fhir.resources.R4B.{_R4B_MODULES[name]}"), name)
    try:
        cls.model_validate(resource)
    except (
        ValidationError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        OverflowError,
    ):  # fhir-core raises the latter too (OverflowError: a year-1 dateTime with a + offset)
        return False
    return True
