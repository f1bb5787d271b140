"""CodeableConcept and Coding are TypedDict leaves of the slim models (cheaper to build than models):
they must accept and refuse exactly what the strict frozen models they replaced did, and read the same."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from cds.fhir.elements import codings_of, concept_label, texts_of
from cds.fhir.shapes import CodeableConcept

_Code = Annotated[str, StringConstraints(pattern=r"^\S+( \S+)*$")]


class _M(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class OldCoding(_M):
    system: str | None = None
    code: _Code | None = None
    display: str | None = None


class OldCC(_M):
    coding: list[OldCoding] = Field(default_factory=list)
    text: str | None = None


NEW = TypeAdapter(CodeableConcept)

CASES: list[Any] = [
    {},
    {"text": "Natalizumab"},
    {"text": None},
    {"text": ""},
    {"text": 5},
    {"coding": []},
    {"coding": None},
    {"coding": "x"},
    {"coding": {"code": "x"}},
    {"coding": [None]},
    {"coding": ["x"]},
    {"coding": [{}]},
    {"coding": [{"system": "http://loinc.org", "code": "731-0", "display": "Lymphocytes"}]},
    {"coding": [{"system": None, "code": "731-0"}]},
    {"coding": [{"code": 731}]},
    {"coding": [{"code": ""}]},
    {"coding": [{"code": " x"}]},
    {"coding": [{"code": "a  b"}]},
    {"coding": [{"code": "a b"}]},
    {"coding": [{"display": True}]},
    {"coding": [{"system": 1}]},
    {"coding": [{"code": "x", "userSelected": True, "extension": [{"url": "u"}]}], "id": "i"},
    {"coding": [{"code": "x"}, {"code": "y", "display": "Y"}], "text": "T"},
    [],
    "text",
    None,
]


def _old_codings(m: OldCC) -> tuple[tuple[str, str], ...]:
    return tuple((c.system or "", c.code) for c in m.coding if c.code)


def _old_texts(m: OldCC) -> list[str]:
    return [t for t in [m.text, *(c.display for c in m.coding)] if t]


@pytest.mark.parametrize("value", CASES)
def test_leaf_accepts_refuses_and_reads_like_the_old_model(value: Any) -> None:
    try:
        old = OldCC.model_validate(value)
    except ValidationError:
        old = None
    try:
        new = NEW.validate_python(value)
    except ValidationError:
        new = None
    assert (old is None) == (new is None), value
    if old is not None:
        assert codings_of(new) == _old_codings(old)
        assert texts_of(new) == _old_texts(old)
        assert concept_label(new) == (_old_texts(old) or [c for _, c in _old_codings(old)] or [""])[0]


def test_json_input_too() -> None:
    import json

    for value in CASES:
        raw = json.dumps(value)
        try:
            old: Any = OldCC.model_validate_json(raw)
        except ValidationError:
            old = None
        try:
            new: Any = NEW.validate_json(raw)
        except ValidationError:
            new = None
        assert (old is None) == (new is None), value
