"""The transport under the app's one httpx client: aiohttp, through httpx-aiohttp.

The code speaks httpx (requests, responses, timeouts, exceptions); only the bytes on the wire go
through aiohttp, whose C parser and connection pool cost less than httpcore's: a FHIR search GET took
about 2.2 ms of CPU here with httpcore and 1.1-1.5 ms with this transport (bench/http_client.py),
and a hook without prefetch makes six of them.

httpx-aiohttp maps every aiohttp connection error to httpx.ConnectTimeout; here only real timeouts
stay timeouts, a refused or dropped connection is httpx.ConnectError, and any other aiohttp error is
an httpx.TransportError, so callers keep telling "timeout" from "connection failed" and never see an
aiohttp exception. TLS uses httpx's context (certifi, SSL_CERT_FILE).

httpx honours proxies from the environment (HTTPS_PROXY, ALL_PROXY, NO_PROXY …) only in its own
transports, and aiohttp's own support looks them up in a thread on every request; so where the
environment names a proxy, `http_transport` leaves the client on httpx's transports, as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.request import getproxies

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

__all__ = ["FhirTransport", "http_transport", "no_cookies"]


def _mapped(exc: Exception) -> Exception:
    """httpx-aiohttp's exception (or a raw aiohttp one) as the httpx error it should have been."""
    if isinstance(exc, httpx.TimeoutException):
        cause = exc.__cause__
        if cause is None or isinstance(cause, TimeoutError):
            return exc  # a real timeout (aiohttp's timeouts are TimeoutErrors)
        return httpx.ConnectError(str(exc) or type(cause).__name__)
    if isinstance(exc, aiohttp.ClientError):  # not in httpx-aiohttp's map
        return httpx.TransportError(str(exc) or type(exc).__name__)
    return exc


class _Stream(httpx.AsyncByteStream):
    """The response body, with the same exception mapping while it is read."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except (httpx.TimeoutException, aiohttp.ClientError) as exc:
            raise _mapped(exc) from exc.__cause__ or exc

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        except (httpx.TimeoutException, aiohttp.ClientError) as exc:
            raise _mapped(exc) from exc.__cause__ or exc


class FhirTransport(AiohttpTransport):
    def get_client(self) -> aiohttp.ClientSession:
        """httpx-aiohttp's session, without a cookie jar (see `no_cookies`)."""
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (httpx.TimeoutException, aiohttp.ClientError) as exc:
            raise _mapped(exc) from exc.__cause__ or exc
        response.stream = _Stream(response.stream)  # type: ignore[arg-type]
        return response


def http_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport | None:
    """The app client's transport: FhirTransport, or None (httpx's own, which then mounts the proxies)
    when the environment names a proxy; read the way httpx reads it (urllib's getproxies)."""
    if {"http", "https", "all"} & set(getproxies()):
        return None
    return FhirTransport(limits=limits)


def no_cookies() -> CookieJar:
    """A jar that keeps no cookie, for the app client: one client serves every EHR user and patient,
    and a cookie one FHIR server set for one token must not ride along with the next token's reads."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
