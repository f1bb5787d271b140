"""The "head" of a hook request: every HookRequest field but the prefetch, for the non-PLEX early exit.

Most hook calls are about orders this service does not act on (an MRI, a statin). Whether a call is
one of those depends only on `context.draftOrders` and `context.selections`, so `HookHead` validates
the request by the same rules as `HookRequest` (same field types, same `HookContext` and
`FhirAuthorization` models) but ignores `prefetch`: pydantic-core parses the whole body in Rust (so
invalid JSON still fails) without building the prefetch as Python objects. `HookRequest.prefetch` is
`Any`, so any body the head accepts, `HookRequest.from_body` accepts too, with the same values in
every other field (tests/hooks/test_head.py). When the head fails, the caller runs the full
`HookRequest.from_body` parse, whose error (and its wording) is the one the client gets.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from cds.hooks.models import FhirAuthorization, HookContext, NonEmpty, parse_json

__all__ = ["HookHead", "parse_head", "read_head"]


class HookHead(BaseModel):
    """HookRequest without `prefetch` (and without keeping unknown top-level keys)."""

    model_config = ConfigDict(extra="ignore")

    hook: NonEmpty
    hookInstance: NonEmpty
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: HookContext


def read_head(raw: bytes | str) -> tuple[HookHead | None, Any]:
    """The body parsed once, and its head; the head is None when the body or the head is invalid.

    The parsed value is kept so that a PLEX call validates the full `HookRequest` from it
    (`HookRequest.from_data`) instead of parsing the JSON a second time.
    """
    try:
        data = parse_json(raw)
    except ValueError:
        return None, None
    try:
        return HookHead.model_validate(data), data
    except ValueError:  # pydantic's ValidationError too
        return None, data


def parse_head(raw: bytes | str) -> HookHead | None:
    """The head of the body; None when it is invalid (the full parse then says why)."""
    return read_head(raw)[0]
