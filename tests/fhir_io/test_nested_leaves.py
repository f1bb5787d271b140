"""The elements nested in the slim resources (Quantity, Reference, Period, Annotation, Extension,
Dosage, Timing, Repeat, DoseAndRate, Ingredient, Stage, Evidence) are TypedDict leaves: they must accept
and refuse exactly what the strict frozen models they replaced did, with the same values."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from cds.fhir import shapes as fm

_Code = Annotated[str, StringConstraints(pattern=r"^\S+( \S+)*$")]
_DateTime = Annotated[
    str,
    StringConstraints(
        pattern=r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
    ),
]


class _M(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class OldQuantity(_M):
    value: float | None = None
    comparator: Literal["<", "<=", ">=", ">"] | None = None
    unit: str | None = None
    system: str | None = None
    code: _Code | None = None


class OldReference(_M):
    reference: str | None = None
    display: str | None = None


class OldPeriod(_M):
    start: _DateTime | None = None
    end: _DateTime | None = None


class OldAnnotation(_M):
    text: str


class OldExtension(_M):
    url: str
    valueDecimal: float | None = None
    valueQuantity: OldQuantity | None = None
    valueString: str | None = None


class OldRepeat(_M):
    boundsPeriod: OldPeriod | None = None
    count: int | None = Field(None, ge=0)
    frequency: int | None = Field(None, ge=0)
    period: float | None = Field(None, ge=0)
    periodUnit: Literal["s", "min", "h", "d", "wk", "mo", "a"] | None = None


class OldTiming(_M):
    event: list[_DateTime] = Field(default_factory=list)
    repeat: OldRepeat | None = None
    code: fm.CodeableConcept | None = None


class OldDoseAndRate(_M):
    doseQuantity: OldQuantity | None = None


class OldDosage(_M):
    text: str | None = None
    timing: OldTiming | None = None
    doseAndRate: list[OldDoseAndRate] = Field(default_factory=list)


class OldIngredient(_M):
    itemCodeableConcept: fm.CodeableConcept | None = None


class OldStage(_M):
    summary: fm.CodeableConcept | None = None


class OldEvidence(_M):
    code: list[fm.CodeableConcept] = Field(default_factory=list)
    detail: list[OldReference] = Field(default_factory=list)


PAIRS: list[tuple[Any, Any]] = [
    (OldQuantity, fm.Quantity),
    (OldReference, fm.Reference),
    (OldPeriod, fm.Period),
    (OldAnnotation, fm.Annotation),
    (OldExtension, fm.Extension),
    (OldRepeat, fm.Repeat),
    (OldTiming, fm.Timing),
    (OldDoseAndRate, fm.DoseAndRate),
    (OldDosage, fm.Dosage),
    (OldIngredient, fm.Ingredient),
    (OldStage, fm.Stage),
    (OldEvidence, fm.Evidence),
]
_ADAPTERS = [(TypeAdapter(old), TypeAdapter(new)) for old, new in PAIRS]


def _plain(value: Any) -> Any:
    """An old model as the dict the leaf gives: absent optional elements dropped, lists kept."""
    if isinstance(value, BaseModel):
        out = {}
        for name in type(value).model_fields:
            if name in value.model_fields_set:
                out[name] = _plain(getattr(value, name))
        return out
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _outcome(adapter: TypeAdapter[Any], value: Any, *, json: bool = False) -> Any:
    try:
        got = adapter.validate_json(value) if json else adapter.validate_python(value)
    except ValidationError:
        return "refused"
    return _plain(got)


_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(-2, 2, allow_nan=False)
    | st.sampled_from(["", " ", "x", "mg", "a b", "a  b", "2024-05-01", "2024-05-01T10:00:00Z", "wk", "<"])
)
_KEYS = [
    "value", "comparator", "unit", "system", "code", "reference", "display", "start", "end", "text",
    "url", "valueDecimal", "valueQuantity", "valueString", "boundsPeriod", "count", "frequency", "period",
    "periodUnit", "event", "repeat", "timing", "doseAndRate", "doseQuantity", "itemCodeableConcept",
    "summary", "detail", "coding", "other",
]  # fmt: skip
_values = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=1500, deadline=None)
@given(value=st.dictionaries(st.sampled_from(_KEYS), _values, max_size=5))
def test_leaves_accept_refuse_and_read_like_the_old_models(value: dict[str, Any]) -> None:
    for old, new in _ADAPTERS:
        assert repr(_outcome(new, value)) == repr(_outcome(old, value)), (old, value)


@pytest.mark.parametrize(
    "value",
    [
        b'{"url":"x","valueDecimal":1}',
        b'{"text":"a","x":[1]}',
        b'{"count":1.0,"period":2}',
        b'{"count":-1}',
        b'{"event":["2024-05-01"],"repeat":{"periodUnit":"wk","period":1.5}}',
        b'{"doseAndRate":[{"doseQuantity":{"value":300,"code":"mg"}}]}',
        b'{"value":"1"}',
        b'{"start":null}',
        b"[]",
    ],
)
def test_json_input_too(value: bytes) -> None:
    for old, new in _ADAPTERS:
        assert repr(_outcome(new, value, json=True)) == repr(_outcome(old, value, json=True))
