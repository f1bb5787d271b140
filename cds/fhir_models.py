"""Slim strict shapes of the FHIR R4B fields the engine reads: shapes only.

Every shape is a strict TypedDict validated by pydantic (unknown keys dropped, absent elements are missing
keys, required ones Required), the resources as well as their elements: building dicts costs about a
third less than building models. This module declares the shapes, the resourceType-discriminated union and
its TypeAdapters; it reads nothing and builds no domain objects. `cds/fhir_io.py` stays the one place
that turns FHIR into engine domain objects and reads the FHIR server."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Required

from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, with_config
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


@with_config(_LEAF)
class _Resource(TypedDict, total=False):
    id: _Id | None


@with_config(_LEAF)
class _PatientScoped(_Resource, total=False):
    subject: _Reference | None


@with_config(_LEAF)
class _ReferenceRange(TypedDict, total=False):
    low: _Quantity | None
    high: _Quantity | None
    text: str | None


@with_config(_LEAF)
class _Observation(_PatientScoped, total=False):
    resourceType: Required[Literal["Observation"]]
    status: Required[
        Literal[
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        ]
    ]
    code: Required[_CC]
    effectiveDateTime: _DateTime | None
    effectivePeriod: _Period | None
    effectiveInstant: _DateTime | None
    issued: _DateTime | None
    valueQuantity: _Quantity | None
    valueString: str | None
    valueBoolean: bool | None
    valueInteger: int | None
    valueCodeableConcept: _CC | None
    interpretation: list[_CC]
    referenceRange: list[_ReferenceRange]
    specimen: _Reference | None
    contained: list[dict[str, Any]]  # a contained Specimen is validated on its own (SPECIMEN)


@with_config(_LEAF)
class _Procedure(_PatientScoped, total=False):
    resourceType: Required[Literal["Procedure"]]
    status: Required[
        Literal[
            "preparation",
            "in-progress",
            "not-done",
            "on-hold",
            "stopped",
            "completed",
            "entered-in-error",
            "unknown",
        ]
    ]
    code: _CC | None
    performedDateTime: _DateTime | None
    performedPeriod: _Period | None
    note: list[_Annotation]
    extension: list[_Extension]


@with_config(_LEAF)
class _Ingredient(TypedDict, total=False):
    itemCodeableConcept: _CC | None


@with_config(_LEAF)
class _Medication(_Resource, total=False):
    resourceType: Required[Literal["Medication"]]
    code: _CC | None
    ingredient: list[_Ingredient]


@with_config(_LEAF)
class _MedicationUse(_PatientScoped, total=False):
    medicationCodeableConcept: _CC | None
    medicationReference: _Reference | None
    contained: list[dict[str, Any]]


@with_config(_LEAF)
class _MedicationStatement(_MedicationUse, total=False):
    resourceType: Required[Literal["MedicationStatement"]]
    status: Required[
        Literal[
            "active",
            "completed",
            "entered-in-error",
            "intended",
            "stopped",
            "on-hold",
            "unknown",
            "not-taken",
        ]
    ]
    effectiveDateTime: _DateTime | None
    effectivePeriod: _Period | None
    dateAsserted: _DateTime | None
    dosage: list[_Dosage]


@with_config(_LEAF)
class _MedicationRequest(_MedicationUse, total=False):
    resourceType: Required[Literal["MedicationRequest"]]
    status: Required[
        Literal[
            "active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"
        ]
    ]
    intent: Required[str]
    authoredOn: _DateTime | None
    dosageInstruction: list[_Dosage]


@with_config(_LEAF)
class _AdministrationDosage(TypedDict, total=False):
    text: str | None
    dose: _Quantity | None


@with_config(_LEAF)
class _MedicationAdministration(_MedicationUse, total=False):
    resourceType: Required[Literal["MedicationAdministration"]]
    status: Required[
        Literal["in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"]
    ]
    effectiveDateTime: _DateTime | None
    effectivePeriod: _Period | None
    dosage: _AdministrationDosage | None


@with_config(_LEAF)
class _Stage(TypedDict, total=False):
    summary: _CC | None


@with_config(_LEAF)
class _Evidence(TypedDict, total=False):
    code: list[_CC]
    detail: list[_Reference]


@with_config(_LEAF)
class _Condition(_PatientScoped, total=False):
    resourceType: Required[Literal["Condition"]]
    clinicalStatus: _CC | None
    verificationStatus: _CC | None
    code: _CC | None
    bodySite: list[_CC]
    onsetDateTime: _DateTime | None
    onsetPeriod: _Period | None
    stage: list[_Stage]
    evidence: list[_Evidence]
    note: list[_Annotation]


@with_config(_LEAF)
class _ServiceRequest(_PatientScoped, total=False):
    resourceType: Required[Literal["ServiceRequest"]]
    status: Required[
        Literal["draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"]
    ]
    intent: Required[str]
    code: _CC | None
    orderDetail: list[_CC]
    quantityQuantity: _Quantity | None
    occurrenceDateTime: _DateTime | None
    occurrencePeriod: _Period | None
    occurrenceTiming: _Timing | None
    note: list[_Annotation]
    patientInstruction: str | None
    extension: list[_Extension]


@with_config(_LEAF)
class _Patient(_Resource, total=False):
    resourceType: Required[Literal["Patient"]]
    birthDate: Annotated[str, StringConstraints(pattern=r"^\d{4}(-\d{2}(-\d{2})?)?$")] | None


@with_config(_LEAF)
class _Specimen(_Resource, total=False):
    resourceType: Required[Literal["Specimen"]]
    type: _CC | None


# a Specimen contained in an Observation (Observation.specimen = "#id"); never read on its own
SPECIMEN: TypeAdapter[_Specimen] = TypeAdapter(_Specimen)


_RESOURCES: dict[str, Any] = {
    "Observation": _Observation,
    "Procedure": _Procedure,
    "Medication": _Medication,
    "MedicationStatement": _MedicationStatement,
    "MedicationRequest": _MedicationRequest,
    "MedicationAdministration": _MedicationAdministration,
    "Condition": _Condition,
    "ServiceRequest": _ServiceRequest,
    "Patient": _Patient,
}
# one resource at a time, by resourceType (entries that failed the batch, contained resources, draft orders)
_MODELS: dict[str, TypeAdapter[Any]] = {name: TypeAdapter(td) for name, td in _RESOURCES.items()}

# every slim model at once, picked by resourceType (a discriminated union): parse_resources validates a
# whole prefetch in one call and only falls back to one-by-one validation when an entry fails
_AnyModel = Annotated[
    _Observation
    | _Procedure
    | _Medication
    | _MedicationStatement
    | _MedicationRequest
    | _MedicationAdministration
    | _Condition
    | _ServiceRequest
    | _Patient,
    Field(discriminator="resourceType"),
]
_ALL_MODELS: TypeAdapter[list[_AnyModel]] = TypeAdapter(list[_AnyModel])
assert set(_RESOURCES) == {
    "Observation",
    "Procedure",
    "Medication",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "Condition",
    "ServiceRequest",
    "Patient",
}  # the union names every slim model
