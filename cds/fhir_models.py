"""Slim strict pydantic models of the FHIR R4B fields the engine reads: shapes only.

This module only declares shapes (models, two TypedDict leaves, the resourceType-discriminated union and
its TypeAdapter, constrained string types); it reads nothing and builds no domain objects. `cds/fhir_io.py` stays the
one place that turns FHIR into engine domain objects and reads the FHIR server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Required

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, with_config
from typing_extensions import TypedDict

# Just the fields cds/fhir_io.py reads. Strict: a string is not a number, a number not a string; required
# elements are required; fixed value sets are Literals; everything else is ignored.
# tests/fhir_io/test_agreement.py checks they read what fhir.resources R4B reads.

_Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9\-.]{1,64}$")]
_DateTime = Annotated[
    str,
    StringConstraints(
        pattern=r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
    ),
]
_Code = Annotated[str, StringConstraints(pattern=r"^\S+( \S+)*$")]


class _M(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# CodeableConcept and Coding, the most numerous elements (every code, status and value concept), are
# read as plain dicts (fhir_io's _codings/_texts): validated exactly like the models (strict, same
# types and constraints, unknown keys dropped) and about a quarter cheaper to build. Absent = missing key.
_LEAF = ConfigDict(strict=True, extra="ignore")


@with_config(_LEAF)
class _Coding(TypedDict, total=False):
    system: str | None
    code: _Code | None
    display: str | None


@with_config(_LEAF)
class _CC(TypedDict, total=False):
    coding: list[_Coding]
    text: str | None


# Quantity, Reference and Period are TypedDict leaves too (read with .get in fhir_io), for the same reason.
@with_config(_LEAF)
class _Quantity(TypedDict, total=False):
    value: float | None
    comparator: Literal["<", "<=", ">=", ">"] | None
    unit: str | None
    system: str | None
    code: _Code | None


@with_config(_LEAF)
class _Reference(TypedDict, total=False):
    reference: str | None
    display: str | None


@with_config(_LEAF)
class _Period(TypedDict, total=False):
    start: _DateTime | None
    end: _DateTime | None


# The elements nested in resources (annotations, extensions, dosage and timing, ingredients, condition
# stages and evidence) are TypedDict leaves as well: absent elements are missing keys (fhir_io reads
# them with .get), required ones are Required.
@with_config(_LEAF)
class _Annotation(TypedDict, total=False):
    text: Required[str]


@with_config(_LEAF)
class _Extension(TypedDict, total=False):
    url: Required[str]
    valueDecimal: float | None
    valueQuantity: _Quantity | None
    valueString: str | None


@with_config(_LEAF)
class _Repeat(TypedDict, total=False):
    boundsPeriod: _Period | None
    count: Annotated[int | None, Field(ge=0)]
    frequency: Annotated[int | None, Field(ge=0)]
    period: Annotated[float | None, Field(ge=0)]
    periodUnit: Literal["s", "min", "h", "d", "wk", "mo", "a"] | None


@with_config(_LEAF)
class _Timing(TypedDict, total=False):
    event: list[_DateTime]
    repeat: _Repeat | None
    code: _CC | None


@with_config(_LEAF)
class _DoseAndRate(TypedDict, total=False):
    doseQuantity: _Quantity | None


@with_config(_LEAF)
class _Dosage(TypedDict, total=False):
    text: str | None
    timing: _Timing | None
    doseAndRate: list[_DoseAndRate]


class _Resource(_M):
    id: _Id | None = None


class _PatientScoped(_Resource):
    subject: _Reference | None = None


class _Observation(_PatientScoped):
    resourceType: Literal["Observation"]
    status: Literal[
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    ]
    code: _CC
    effectiveDateTime: _DateTime | None = None
    effectivePeriod: _Period | None = None
    effectiveInstant: _DateTime | None = None
    issued: _DateTime | None = None
    valueQuantity: _Quantity | None = None
    valueString: str | None = None
    valueBoolean: bool | None = None
    valueInteger: int | None = None
    valueCodeableConcept: _CC | None = None
    interpretation: list[_CC] = Field(default_factory=list)


class _Procedure(_PatientScoped):
    resourceType: Literal["Procedure"]
    status: Literal[
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    ]
    code: _CC | None = None
    performedDateTime: _DateTime | None = None
    performedPeriod: _Period | None = None
    note: list[_Annotation] = Field(default_factory=list)
    extension: list[_Extension] = Field(default_factory=list)


@with_config(_LEAF)
class _Ingredient(TypedDict, total=False):
    itemCodeableConcept: _CC | None


class _Medication(_Resource):
    resourceType: Literal["Medication"]
    code: _CC | None = None
    ingredient: list[_Ingredient] = Field(default_factory=list)


class _MedicationUse(_PatientScoped):
    medicationCodeableConcept: _CC | None = None
    medicationReference: _Reference | None = None
    contained: list[dict[str, Any]] = Field(default_factory=list)


class _MedicationStatement(_MedicationUse):
    resourceType: Literal["MedicationStatement"]
    status: Literal[
        "active", "completed", "entered-in-error", "intended", "stopped", "on-hold", "unknown", "not-taken"
    ]
    effectiveDateTime: _DateTime | None = None
    effectivePeriod: _Period | None = None
    dateAsserted: _DateTime | None = None
    dosage: list[_Dosage] = Field(default_factory=list)


class _MedicationRequest(_MedicationUse):
    resourceType: Literal["MedicationRequest"]
    status: Literal[
        "active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"
    ]
    intent: str
    authoredOn: _DateTime | None = None
    dosageInstruction: list[_Dosage] = Field(default_factory=list)


@with_config(_LEAF)
class _Stage(TypedDict, total=False):
    summary: _CC | None


@with_config(_LEAF)
class _Evidence(TypedDict, total=False):
    code: list[_CC]
    detail: list[_Reference]


class _Condition(_PatientScoped):
    resourceType: Literal["Condition"]
    clinicalStatus: _CC | None = None
    verificationStatus: _CC | None = None
    code: _CC | None = None
    bodySite: list[_CC] = Field(default_factory=list)
    onsetDateTime: _DateTime | None = None
    onsetPeriod: _Period | None = None
    stage: list[_Stage] = Field(default_factory=list)
    evidence: list[_Evidence] = Field(default_factory=list)
    note: list[_Annotation] = Field(default_factory=list)


class _ServiceRequest(_PatientScoped):
    resourceType: Literal["ServiceRequest"]
    status: Literal["draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"]
    intent: str
    code: _CC | None = None
    orderDetail: list[_CC] = Field(default_factory=list)
    quantityQuantity: _Quantity | None = None
    occurrenceDateTime: _DateTime | None = None
    occurrencePeriod: _Period | None = None
    occurrenceTiming: _Timing | None = None
    note: list[_Annotation] = Field(default_factory=list)
    patientInstruction: str | None = None
    extension: list[_Extension] = Field(default_factory=list)


class _Patient(_Resource):
    resourceType: Literal["Patient"]


_MODELS: dict[str, type[_Resource]] = {
    "Observation": _Observation,
    "Procedure": _Procedure,
    "Medication": _Medication,
    "MedicationStatement": _MedicationStatement,
    "MedicationRequest": _MedicationRequest,
    "Condition": _Condition,
    "ServiceRequest": _ServiceRequest,
    "Patient": _Patient,
}

# every slim model at once, picked by resourceType (a discriminated union): parse_resources validates a
# whole prefetch in one call and only falls back to one-by-one validation when an entry fails
_AnyModel = Annotated[
    _Observation
    | _Procedure
    | _Medication
    | _MedicationStatement
    | _MedicationRequest
    | _Condition
    | _ServiceRequest
    | _Patient,
    Field(discriminator="resourceType"),
]
_ALL_MODELS: TypeAdapter[list[_AnyModel]] = TypeAdapter(list[_AnyModel])
assert set(_MODELS) == {
    "Observation",
    "Procedure",
    "Medication",
    "MedicationStatement",
    "MedicationRequest",
    "Condition",
    "ServiceRequest",
    "Patient",
}  # the union names every slim model
