"""Authentication of the calling EHR (CDS Hooks 2.0 "Trusting CDS Clients").

CONTRACT (the security work fills in the JWT path; signatures are fixed):
    Authenticator(settings, http).check(request, endpoint_url) -> Claims | None
        raises cds.errors.Unauthorized on any failure (the response is a bare 401).
        With settings.auth == "off" it returns None and checks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from cds.errors import Unauthorized
from cds.settings import Settings


@dataclass(frozen=True)
class Claims:
    iss: str
    jti: str
    tenant: str | None = None


class Authenticator:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http

    async def check(self, request: Any, endpoint_url: str) -> Claims | None:
        if self.settings.auth == "off":
            return None
        raise Unauthorized("JWT verification not implemented yet")  # fail closed

    async def close(self) -> None:
        return None
