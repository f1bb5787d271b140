"""Slim strict shapes of the FHIR R4B fields the engine reads: shapes only.

Every shape is a strict TypedDict validated by pydantic (unknown keys dropped, absent elements are missing
keys, required ones Required), the resources as well as their elements: building dicts costs about a
third less than building models. This module declares the shapes, the resourceType-discriminated union and
its TypeAdapters; it reads nothing and builds no domain objects. The rest of `cds/fhir/` turns FHIR into
engine domain objects; `cds/fhir_io.py` stays the one place that reads the FHIR server."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Required

from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, with_config
from typing_extensions import TypedDict

# Just the fields cds/fhir/ reads. Strict: a string is not a number, a number not a string; required
# elements are required; fixed value sets are Literals; everything else is ignored.
# tests/fhir_io/test_agreement.py checks they read what fhir.resources R4B reads.

_Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9\-.]{1,64}$")]
DateTime = Annotated[
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
class Coding(TypedDict, total=False):
    system: str | None
    code: _Code | None
    display: str | None


@with_config(_LEAF)
class CodeableConcept(TypedDict, total=False):
    coding: list[Coding]
    text: str | None


# Quantity, Reference and Period are TypedDict leaves too (read with .get in fhir_io), for the same reason.
@with_config(_LEAF)
class Quantity(TypedDict, total=False):
    value: float | None
    comparator: Literal["<", "<=", ">=", ">"] | None
    unit: str | None
    system: str | None
    code: _Code | None


@with_config(_LEAF)
class Reference(TypedDict, total=False):
    reference: str | None
    display: str | None


@with_config(_LEAF)
class Period(TypedDict, total=False):
    start: DateTime | None
    end: DateTime | None


# The elements nested in resources (annotations, extensions, dosage and timing, ingredients, condition
# stages and evidence) are TypedDict leaves as well: absent elements are missing keys (fhir_io reads
# them with .get), required ones are Required.
@with_config(_LEAF)
class Annotation(TypedDict, total=False):
    text: Required[str]


@with_config(_LEAF)
class Extension(TypedDict, total=False):
    url: Required[str]
    valueDecimal: float | None
    valueQuantity: Quantity | None
    valueString: str | None


@with_config(_LEAF)
class Repeat(TypedDict, total=False):
    boundsPeriod: Period | None
    count: Annotated[int | None, Field(ge=0)]
    frequency: Annotated[int | None, Field(ge=0)]
    period: Annotated[float | None, Field(ge=0)]
    periodUnit: Literal["s", "min", "h", "d", "wk", "mo", "a"] | None


@with_config(_LEAF)
class Timing(TypedDict, total=False):
    event: list[DateTime]
    repeat: Repeat | None
    code: CodeableConcept | None


@with_config(_LEAF)
class DoseAndRate(TypedDict, total=False):
    doseQuantity: Quantity | None


@with_config(_LEAF)
class Dosage(TypedDict, total=False):
    text: str | None
    timing: Timing | None
    doseAndRate: list[DoseAndRate]


@with_config(_LEAF)
class Resource(TypedDict, total=False):
    id: _Id | None


@with_config(_LEAF)
class PatientScoped(Resource, total=False):
    subject: Reference | None


@with_config(_LEAF)
class ReferenceRange(TypedDict, total=False):
    low: Quantity | None
    high: Quantity | None
    text: str | None


@with_config(_LEAF)
class Observation(PatientScoped, total=False):
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
    code: Required[CodeableConcept]
    effectiveDateTime: DateTime | None
    effectivePeriod: Period | None
    effectiveInstant: DateTime | None
    issued: DateTime | None
    valueQuantity: Quantity | None
    valueString: str | None
    valueBoolean: bool | None
    valueInteger: int | None
    valueCodeableConcept: CodeableConcept | None
    interpretation: list[CodeableConcept]
    referenceRange: list[ReferenceRange]
    specimen: Reference | None
    contained: list[dict[str, Any]]  # a contained Specimen is validated on its own (SPECIMEN)


@with_config(_LEAF)
class Procedure(PatientScoped, total=False):
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
    code: CodeableConcept | None
    performedDateTime: DateTime | None
    performedPeriod: Period | None
    note: list[Annotation]
    extension: list[Extension]


@with_config(_LEAF)
class Ingredient(TypedDict, total=False):
    itemCodeableConcept: CodeableConcept | None


@with_config(_LEAF)
class Medication(Resource, total=False):
    resourceType: Required[Literal["Medication"]]
    code: CodeableConcept | None
    ingredient: list[Ingredient]


@with_config(_LEAF)
class MedicationUse(PatientScoped, total=False):
    medicationCodeableConcept: CodeableConcept | None
    medicationReference: Reference | None
    contained: list[dict[str, Any]]


@with_config(_LEAF)
class MedicationStatement(MedicationUse, total=False):
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
    effectiveDateTime: DateTime | None
    effectivePeriod: Period | None
    dateAsserted: DateTime | None
    dosage: list[Dosage]


@with_config(_LEAF)
class MedicationRequest(MedicationUse, total=False):
    resourceType: Required[Literal["MedicationRequest"]]
    status: Required[
        Literal[
            "active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"
        ]
    ]
    intent: Required[str]
    authoredOn: DateTime | None
    dosageInstruction: list[Dosage]


@with_config(_LEAF)
class AdministrationDosage(TypedDict, total=False):
    text: str | None
    dose: Quantity | None


@with_config(_LEAF)
class MedicationAdministration(MedicationUse, total=False):
    resourceType: Required[Literal["MedicationAdministration"]]
    status: Required[
        Literal["in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"]
    ]
    effectiveDateTime: DateTime | None
    effectivePeriod: Period | None
    dosage: AdministrationDosage | None


@with_config(_LEAF)
class Stage(TypedDict, total=False):
    summary: CodeableConcept | None


@with_config(_LEAF)
class Evidence(TypedDict, total=False):
    code: list[CodeableConcept]
    detail: list[Reference]


@with_config(_LEAF)
class Condition(PatientScoped, total=False):
    resourceType: Required[Literal["Condition"]]
    clinicalStatus: CodeableConcept | None
    verificationStatus: CodeableConcept | None
    code: CodeableConcept | None
    bodySite: list[CodeableConcept]
    onsetDateTime: DateTime | None
    onsetPeriod: Period | None
    stage: list[Stage]
    evidence: list[Evidence]
    note: list[Annotation]


@with_config(_LEAF)
class ServiceRequest(PatientScoped, total=False):
    resourceType: Required[Literal["ServiceRequest"]]
    status: Required[
        Literal["draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"]
    ]
    intent: Required[str]
    code: CodeableConcept | None
    orderDetail: list[CodeableConcept]
    quantityQuantity: Quantity | None
    occurrenceDateTime: DateTime | None
    occurrencePeriod: Period | None
    occurrenceTiming: Timing | None
    note: list[Annotation]
    patientInstruction: str | None
    extension: list[Extension]


@with_config(_LEAF)
class Patient(Resource, total=False):
    resourceType: Required[Literal["Patient"]]
    birthDate: Annotated[str, StringConstraints(pattern=r"^\d{4}(-\d{2}(-\d{2})?)?$")] | None


@with_config(_LEAF)
class Specimen(Resource, total=False):
    resourceType: Required[Literal["Specimen"]]
    type: CodeableConcept | None


# a Specimen contained in an Observation (Observation.specimen = "#id"); never read on its own
SPECIMEN: TypeAdapter[Specimen] = TypeAdapter(Specimen)


RESOURCES: dict[str, Any] = {
    "Observation": Observation,
    "Procedure": Procedure,
    "Medication": Medication,
    "MedicationStatement": MedicationStatement,
    "MedicationRequest": MedicationRequest,
    "MedicationAdministration": MedicationAdministration,
    "Condition": Condition,
    "ServiceRequest": ServiceRequest,
    "Patient": Patient,
}
# one resource at a time, by resourceType (entries that failed the batch, contained resources, draft orders)
MODELS: dict[str, TypeAdapter[Any]] = {name: TypeAdapter(td) for name, td in RESOURCES.items()}

# every slim model at once, picked by resourceType (a discriminated union): parse_resources validates a
# whole prefetch in one call and only falls back to one-by-one validation when an entry fails
_AnyModel = Annotated[
    Observation
    | Procedure
    | Medication
    | MedicationStatement
    | MedicationRequest
    | MedicationAdministration
    | Condition
    | ServiceRequest
    | Patient,
    Field(discriminator="resourceType"),
]
ALL_MODELS: TypeAdapter[list[_AnyModel]] = TypeAdapter(list[_AnyModel])
assert set(RESOURCES) == {
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
