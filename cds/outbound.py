"""Which FHIR servers the service may call (SSRF guard). The security work owns this module.

CONTRACT: check_fhir_server(url, settings, claims) -> None, raises cds.errors.FhirServerNotAllowed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from cds.errors import FhirServerNotAllowed
from cds.settings import Settings


def check_fhir_server(url: str, settings: Settings, claims: Any = None) -> None:
    parts = urlsplit(url)
    allow = settings.fhir_server_allowlist
    if allow:
        if any(url.startswith(prefix) for prefix in allow):
            return
        raise FhirServerNotAllowed()
    if settings.auth == "off" and parts.hostname in {"127.0.0.1", "localhost", "::1"}:
        return
    raise FhirServerNotAllowed()
