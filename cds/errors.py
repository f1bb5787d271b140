"""Every error the service raises on purpose, and what the EHR sees:

* CdsError                        500  OperationOutcome, code=exception
  x BadHookRequest                400  body is not a valid request for this hook
  x UnsupportedMediaType          415  POST body is not application/json
  x BodyTooLarge                  413  body over the configured limit
  x Unauthorized                  401  bare: no detail leaves the service
  x UnknownService                404  no service with that id
  x DataUnavailable               412  neither prefetch nor the FHIR server gave what we need
    · FhirServerNotAllowed             fhirServer is not on the allowlist (no request is sent)
  x ReplayStoreUnavailable        503  the jti replay store (Redis) cannot answer: our fault, not the EHR's
  x StoreUnavailable              503  the database did not answer in time (a fault of ours, not the EHR's)
Each class sets status_code and issue_code; each instance a stable `code`.
"Cannot compute" is an engine result rendered as a card, never an HTTP error.
"""

from __future__ import annotations

from typing import Any


class CdsError(Exception):
    status_code = 500
    issue_code = "exception"  # FHIR IssueType

    def __init__(self, message: str = "internal error", *, code: str = "internal") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class BadHookRequest(CdsError):
    status_code = 400
    issue_code = "invalid"

    def __init__(self, message: str, *, code: str = "bad-request") -> None:
        super().__init__(message, code=code)


class UnsupportedMediaType(CdsError):
    status_code = 415
    issue_code = "not-supported"

    def __init__(
        self, message: str = "POST bodies must be application/json", *, code: str = "media-type"
    ) -> None:
        super().__init__(message, code=code)


class BodyTooLarge(CdsError):
    status_code = 413
    issue_code = "too-costly"

    def __init__(self, message: str = "request body too large", *, code: str = "too-large") -> None:
        super().__init__(message, code=code)


class Unauthorized(CdsError):
    status_code = 401
    issue_code = "login"

    def __init__(self, reason: str = "unauthorized", *, code: str = "unauthorized") -> None:
        # `reason` is for the log only; the response is a bare 401.
        super().__init__(reason, code=code)


class UnknownService(CdsError):
    status_code = 404
    issue_code = "not-found"

    def __init__(self, service_id: str = "") -> None:
        super().__init__("no CDS service with that id", code="unknown-service")


class DataUnavailable(CdsError):
    status_code = 412
    issue_code = "incomplete"

    def __init__(
        self, message: str, *, code: str = "data-unavailable", sources: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.sources = sources  # prefetch key -> where it came from or "error"; for the log and audit only


class FhirServerNotAllowed(DataUnavailable):
    def __init__(self, message: str = "fhirServer is not on this service's allowlist") -> None:
        super().__init__(message, code="fhir-server-not-allowed")


class ReplayStoreUnavailable(CdsError):
    """The token may be fine, but whether its jti was seen cannot be told: refuse it as a fault of ours."""

    status_code = 503
    issue_code = "transient"

    def __init__(self, message: str = "the service cannot check tokens right now; try again") -> None:
        super().__init__(message, code="replay-store-unavailable")


class StoreUnavailable(CdsError):
    """The feedback or audit database did not answer in time: a fault of ours, never the EHR's."""

    status_code = 503
    issue_code = "transient"

    def __init__(
        self, message: str = "the database is not reachable; try again", *, code: str = "store-unavailable"
    ) -> None:
        super().__init__(message, code=code)


def to_operation_outcome(exc: CdsError) -> dict[str, Any]:
    issue = {
        "severity": "error",
        "code": exc.issue_code,
        "details": {"text": exc.message},
        "diagnostics": exc.code,
    }
    return {"resourceType": "OperationOutcome", "issue": [issue]}
