"""CDS Hooks 2.0 wire models (https://cds-hooks.hl7.org/2.0/).

Incoming models are tolerant (`extra="allow"`: unknown keys are kept and ignored, optional fields
stay optional); outgoing models are strict (`extra="forbid"`) and serialise through `prune`, which drops
`None`, `""`, `[]` and `{}` everywhere ("JSON elements SHALL NOT be null … SHALL NOT be empty").
The one sanctioned empty value, the top-level `{"cards": []}`, is kept by `CdsResponse.to_json`.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
# CDS Hooks 2.0: "hookInstance: string, a universally unique identifier (UUID) for this particular hook call"
HookInstance = Annotated[
    str, StringConstraints(pattern=r"^[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$")
]
Summary = Annotated[str, StringConstraints(min_length=1, max_length=139)]  # "<140"; Inferno fails 140

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def prune(value: Any) -> Any:
    """Drop None, "", [] and {} recursively (dict values and list items); refuse NaN and infinities
    (JSON has no such numbers), so the result can go to any JSON encoder."""
    if isinstance(value, dict):
        return _pruned_dict(value)
    if isinstance(value, list):
        return _pruned_list(value)
    return _finite(value) if isinstance(value, float) else value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("NaN or infinity cannot be written as JSON")
    return value


# The two walks below test for str first: most values of a response are non-empty strings.


def _pruned_dict(values: dict[Any, Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for k, v in values.items():
        if type(v) is str:
            if v:
                out[k] = v
        elif isinstance(v, (dict, list)):
            v = prune(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = _finite(v) if isinstance(v, float) else v
    return out


def _pruned_list(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if type(v) is str:
            if v:
                out.append(v)
        elif isinstance(v, (dict, list)):
            v = prune(v)
            if v:
                out.append(v)
        elif v is not None:
            out.append(_finite(v) if isinstance(v, float) else v)
    return out


def new_uuid() -> str:
    """A random (version 4) UUID as the spec writes it: a card's or a suggestion's `uuid`."""
    return str(uuid.uuid4())


# ---------------------------------------------------------------- incoming


class _In(BaseModel):
    model_config = ConfigDict(extra="allow")


class FhirAuthorization(_In):
    """https://cds-hooks.hl7.org/2.0/#passing-the-access-token-to-the-cds-service (all but the token optional)."""

    access_token: SecretStr
    token_type: str | None = None
    expires_in: int | None = None
    scope: str | None = None
    subject: str | None = None
    patient: str | None = None


class HookContext(_In):
    """order-select / order-sign context; unknown keys are tolerated (hook-versioning rule)."""

    userId: str | None = None
    patientId: NonEmpty
    encounterId: str | None = None
    selections: list[str] | None = None
    draftOrders: Any = None


class HookRequest(_In):
    """https://cds-hooks.hl7.org/2.0/#http-request"""

    hook: NonEmpty
    hookInstance: HookInstance
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: HookContext
    prefetch: Annotated[Any, WithJsonSchema({"anyOf": [{"type": "object"}, {"type": "null"}]})] = (
        None  # {key: resource | Bundle | OperationOutcome | null}; anything else = no prefetch
    )

    @field_validator("prefetch")
    @classmethod
    def _prefetch_object(cls, v: Any) -> dict[str, Any] | None:
        return v if isinstance(v, dict) else None

    @classmethod
    def from_body(cls, raw: bytes | str) -> HookRequest:
        """`model_validate_json(raw)`, about half the CPU on a prefetch-sized body.

        orjson builds the Python values (about 30% faster than pydantic-core's `from_json`), then the
        model validates them in Python mode: for `Any` (the prefetch) that is the same values, faster
        than validating them in JSON mode. Every field here reads JSON input the same way in both
        modes. Anything orjson refuses (invalid JSON, but also NaN and 1e400) and any invalid field is
        re-validated with `model_validate_json`, so what is refused and the errors' wording are exactly
        the JSON-mode ones. One known difference in what is read: orjson reads an integer beyond the
        64-bit range as the nearest float (pydantic-core keeps it an int). No field read here can hold
        one validly (FHIR integers are 32-bit): where an integer is required the slim models now
        refuse such a resource as malformed, and decimals read the same number
        (tests/hooks/test_from_body.py shows both).
        """
        try:
            return cls.model_validate(orjson.loads(raw))
        except ValueError:  # orjson.JSONDecodeError, or pydantic's ValidationError
            return cls.model_validate_json(raw)


class AcceptedSuggestion(_In):
    id: NonEmpty


class FeedbackCoding(_In):
    code: NonEmpty
    system: str | None = None
    display: str | None = None


class OverrideReasonIn(_In):
    reason: FeedbackCoding | None = None
    userComment: str | None = None


class FeedbackItem(_In):
    """https://cds-hooks.hl7.org/2.0/#feedback"""

    card: uuid.UUID
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReasonIn | None = None
    outcomeTimestamp: str

    @field_validator("outcomeTimestamp")
    @classmethod
    def _rfc3339(cls, v: str) -> str:
        if not _RFC3339.match(v):
            raise ValueError("outcomeTimestamp must be an RFC 3339 date-time with a time zone")
        try:
            datetime.fromisoformat(v.replace("z", "Z").replace("Z", "+00:00").replace("t", "T"))
        except ValueError as exc:
            raise ValueError("outcomeTimestamp is not a valid date-time") from exc
        return v

    @model_validator(mode="after")
    def _accepted_needs_suggestions(self) -> FeedbackItem:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("acceptedSuggestions is required when outcome is accepted")
        return self

    def timestamp_utc(self) -> str:
        """outcomeTimestamp normalised to UTC, so a repeat in another notation is the same row."""
        dt = datetime.fromisoformat(
            self.outcomeTimestamp.replace("z", "Z").replace("Z", "+00:00").replace("t", "T")
        )
        return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


class FeedbackRequest(_In):
    feedback: Annotated[list[FeedbackItem], Field(min_length=1)]


# ---------------------------------------------------------------- outgoing


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict[str, Any]:
        """The JSON object the spec shows: no null, no empty string, list or object anywhere."""
        out: dict[str, Any] = prune(self.model_dump(mode="json", exclude_none=True))
        return out


class Coding(_Out):
    """https://cds-hooks.hl7.org/2.0/#coding"""

    code: NonEmpty
    system: NonEmpty
    display: str | None = None


class Source(_Out):
    """https://cds-hooks.hl7.org/2.0/#source"""

    label: NonEmpty
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(_Out):
    """https://cds-hooks.hl7.org/2.0/#action"""

    type: Literal["create", "update", "delete"]
    description: NonEmpty
    resource: dict[str, Any] | None = None
    resourceId: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Action:
        if self.type in ("create", "update") and not self.resource:
            raise ValueError(f"a {self.type} action carries a full resource")
        if self.type == "delete" and not (self.resourceId and "/" in self.resourceId):
            raise ValueError("a delete action names resourceId as Type/id")
        return self


class Suggestion(_Out):
    """https://cds-hooks.hl7.org/2.0/#suggestion"""

    label: NonEmpty
    uuid: str = Field(default_factory=new_uuid)
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(_Out):
    """https://cds-hooks.hl7.org/2.0/#link"""

    label: NonEmpty
    url: NonEmpty
    type: Literal["absolute", "smart"]
    appContext: str | None = None
    autolaunchable: bool | None = None

    @model_validator(mode="after")
    def _app_context_only_smart(self) -> Link:
        if self.appContext is not None and self.type != "smart":
            raise ValueError("appContext is only allowed on smart links")
        return self


class Card(_Out):
    """https://cds-hooks.hl7.org/2.0/#card-attributes"""

    uuid: str = Field(default_factory=new_uuid)
    summary: Summary
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _invariants(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required when suggestions are present")
        if (
            self.selectionBehavior == "at-most-one"
            and self.suggestions
            and sum(1 for s in self.suggestions if s.isRecommended) > 1
        ):
            raise ValueError("several recommended suggestions need selectionBehavior 'any'")
        for reason in self.overrideReasons or ():
            if not reason.display:
                raise ValueError("override reasons carry a display")
        return self


class CdsResponse(_Out):
    """https://cds-hooks.hl7.org/2.0/#cds-service-response"""

    cards: list[Card] = Field(default_factory=list)
    systemActions: list[Action] | None = None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["cards"] = out.get("cards", [])  # the one sanctioned empty value
        return out


class ServiceDefinition(_Out):
    """https://cds-hooks.hl7.org/2.0/#response (discovery)"""

    hook: NonEmpty
    title: str | None = None
    description: NonEmpty
    id: NonEmpty
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class DiscoveryResponse(_Out):
    services: list[ServiceDefinition]

    def to_json(self) -> dict[str, Any]:
        return {"services": [s.to_json() for s in self.services]}
