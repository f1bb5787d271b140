"""Small readers of validated FHIR elements (CodeableConcept, dateTime, references, values) and the
slim validation of one resource, shared by the facts and the orders."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from cds.fhir import r4b, shapes, terms, values
from cds.fhir.shapes import MODELS


def validate_resource(resource: Any, strict: bool) -> shapes.Resource | None:
    """Slim copy of one resource; None when it is malformed (or, with `strict`, R4B-invalid)."""
    if not isinstance(resource, dict):
        return None
    model = MODELS.get(resource.get("resourceType"))  # type: ignore[arg-type]
    if model is None:
        return None
    try:
        parsed: shapes.Resource = model.validate_python(resource)
    except ValidationError:
        return None
    if strict and not r4b.r4b_valid(resource):
        return None
    return parsed


def codings_of(cc: shapes.CodeableConcept | None) -> tuple[tuple[str, str], ...]:
    if not cc or "coding" not in cc:
        return ()
    return tuple([(c.get("system") or "", code) for c in cc["coding"] if (code := c.get("code"))])


def texts_of(cc: shapes.CodeableConcept | None) -> list[str]:
    if not cc:
        return []
    text = cc.get("text")
    out = [text] if text else []
    for c in cc.get("coding", ()):
        if display := c.get("display"):
            out.append(display)
    return out


def concept_of(cc: shapes.CodeableConcept | None) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """(codings_of(cc), texts_of(cc)): the codes and the texts of a concept."""
    return codings_of(cc), texts_of(cc)


def concept_label(cc: shapes.CodeableConcept | None) -> str:
    return label_from(*concept_of(cc))


def label_from(codes: tuple[tuple[str, str], ...], texts: list[str]) -> str:
    """concept_label from the concept's codings and texts when they are at hand already."""
    if texts:
        return texts[0]
    return codes[0][1] if codes else ""


def first_datetime(*candidates: str | None) -> tuple[datetime, str] | None:
    """The first date given, of validated dateTime values."""
    for c in candidates:
        if c:
            return terms.parse_fhir_datetime(c)
    return None


def source_of(r: shapes.Resource, rtype: str) -> str:
    rid = r.get("id")
    return f"{rtype}/{rid}" if rid else rtype


_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?$")


def other_patient(ref: str, patient_id: str) -> bool:
    """The subject reference names another patient."""
    m = _PATIENT_REF.search(ref)
    return m is not None and m.group(1) != patient_id


_MEDICATION_REF = re.compile(r"(?:^|/)(Medication/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?$")
UCUM = "http://unitsofmeasure.org"


def numeric_value(o: shapes.Observation) -> tuple[float, str | None, str, str] | values.Problem | None:
    """(value, comparator, unit for conversion, unit as reported) from valueQuantity or valueString;
    a Problem when a valueString's number cannot be read one way only (cds/fhir/values.py)."""
    q = o.get("valueQuantity")
    if q is not None and (value := q.get("value")) is not None:
        code, qunit = q.get("code"), q.get("unit")
        unit = (code if q.get("system") == UCUM and code else None) or qunit or code or ""
        return value, q.get("comparator"), unit, qunit or code or ""
    if vs := o.get("valueString"):
        split = values.split_value_string(vs)
        if split is None or isinstance(split, values.Problem):
            return split
        comparator, number, unit = split
        return number, comparator, unit, unit
    if (vi := o.get("valueInteger")) is not None:
        return float(vi), None, "", ""
    return None


def reported_text(value: float, comparator: str | None, unit: str) -> str:
    return f"{comparator or ''}{value:g} {unit}".strip()


def reported_raw(o: shapes.Observation) -> str:
    """An Observation's value as the lab sent it, for the card."""
    q = o.get("valueQuantity")
    if q is not None and (value := q.get("value")) is not None:
        return reported_text(value, q.get("comparator"), q.get("unit") or q.get("code") or "")
    if vs := o.get("valueString"):
        return vs
    if (vcc := o.get("valueCodeableConcept")) is not None:
        return concept_label(vcc)
    if (vi := o.get("valueInteger")) is not None:
        return str(vi)
    if (vb := o.get("valueBoolean")) is not None:
        return str(vb).lower()
    return ""


def plasma_volumes_from(
    extensions: Iterable[shapes.Extension], texts: tuple[str | None, ...]
) -> float | None:
    for ext in extensions:
        url = ext["url"].lower()
        if "plasma" in url and "volume" in url:
            decimal, quantity = ext.get("valueDecimal"), ext.get("valueQuantity")
            value = decimal if decimal is not None else (quantity.get("value") if quantity else None)
            if value is not None and 0 < value <= 5:
                return float(value)
            vs = ext.get("valueString")
            if vs and (pv := terms.plasma_volumes([vs + " plasma volumes"])):
                return pv
    return terms.plasma_volumes(texts)  # empty texts are passed over
