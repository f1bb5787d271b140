"""Which FHIR servers the service may call (SSRF guard), and the one HTTP client outbound calls use.

CONTRACT: check_fhir_server(url, settings, claims) -> None, raises cds.errors.FhirServerNotAllowed.
Call it before any request to a `fhirServer`, and again for every URL the service would follow
(a `link[next]`, a redirect target): no request may leave for a URL it refuses.

The decision:
  * The URL must parse cleanly: scheme http or https, a host, no userinfo, no query or fragment,
    no dot segments or encoded slashes/dots, no whitespace or backslashes.
  * `https` is required; plain `http` only for a loopback host (127.0.0.0/8, ::1, localhost).
  * Allowed prefixes:
      - JWT on (claims given): the prefixes of the token's issuer (`CDS_JWT_ISSUERS[iss].fhir_servers`)
        AND the global `CDS_FHIR_SERVER_ALLOWLIST`: a URL must match each list that is set (the
        intersection); when neither is set, nothing is allowed.
      - JWT off (claims None): `CDS_FHIR_SERVER_ALLOWLIST` when set; otherwise loopback only.
  * A prefix matches when scheme, host and effective port are equal and the prefix's path is the
    URL's path or a parent of it on a segment boundary: `https://ehr.example.org/fhir` matches
    `https://ehr.example.org/fhir/` and `/fhir/R4`, not `/fhir2`, and never
    `https://ehr.example.org.evil.com/fhir` or `https://ehr.example.org@evil.com/fhir`.
validate_allowlist(settings) (run by cds.auth.validate_startup) refuses prefixes that could never
be called: malformed ones and plain http off loopback.
normalise_url(url) -> str | None: the URL as a decoding server reads it (`%2e` decoded, dot segments
resolved); same_base (below) checks a `link[next]` in that form too before sending the token.

http_client(settings) -> httpx.AsyncClient: the app's one client for FHIR reads and JWKS, on httpx's own
transport (proxies from the environment honoured, TLS verified with certifi or SSL_CERT_FILE), within
`pool_limits(settings)`, never following a redirect and keeping no cookie (`no_cookies`).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from cds.errors import FhirServerNotAllowed
from cds.settings import Settings

__all__ = [
    "check_fhir_server",
    "fhir_server_allowed",
    "http_client",
    "is_loopback_host",
    "no_cookies",
    "normalise_url",
    "pool_limits",
    "same_base",
    "validate_allowlist",
]

_DEFAULT_PORT = {"http": 80, "https": 443}
_BAD_CHARS = re.compile(r"[\s\\\x00-\x1f\x7f]")
_BAD_ESCAPES = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)


class Issued(Protocol):
    """What the allowlist reads of verified token claims (cds.auth.Claims): the issuer."""

    @property
    def iss(self) -> str: ...


def is_loopback_host(host: str | None) -> bool:
    if not host or not isinstance(host, str):
        return False
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@dataclass(frozen=True)
class _Url:
    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]

    def under(self, prefix: _Url) -> bool:
        return (
            self.scheme == prefix.scheme
            and self.host == prefix.host
            and self.port == prefix.port
            and self.segments[: len(prefix.segments)] == prefix.segments
        )


def _parse(url: str) -> _Url | None:
    """A canonical view of a FHIR base URL, or None when it is not one we would ever call."""
    if not isinstance(url, str) or len(url) > 2048 or _BAD_CHARS.search(url) or _BAD_ESCAPES.search(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT or not parts.hostname or "@" in parts.netloc:
        return None
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return None
    segments = tuple(s for s in parts.path.split("/") if s)
    if any(s in (".", "..") for s in segments):
        return None
    host = parts.hostname.lower().rstrip(".") if parts.hostname.endswith(".") else parts.hostname.lower()
    return _Url(scheme, host, port if port is not None else _DEFAULT_PORT[scheme], segments)


_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)
_NEVER_PLAIN = re.compile(r"%(2f|5c|00)|%25(2e|2f|5c|00)", re.IGNORECASE)


def normalise_url(url: str) -> str | None:
    """`url` as a server that decodes `%2e` and resolves dot segments reads it (RFC 3986 §5.2.4), or
    None when no plain reading exists: an encoded slash, backslash or NUL (or one encoded twice),
    whitespace or control characters, an unparsable URL.

    A `link[next]` of `…/fhir/%2e%2e/other-tenant/Observation` looks inside `…/fhir` until the server
    decodes it; check where it really goes (issue 18): the base check runs on this form.
    """
    if not isinstance(url, str) or _BAD_CHARS.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if _NEVER_PLAIN.search(parts.path):
        return None
    segments = _ENCODED_DOT.sub(".", parts.path).split("/")
    kept: list[str] = []
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and len(kept) > 1:
                kept.pop()
            if i == len(segments) - 1:
                kept.append("")  # `a/b/..` is the directory `a/`
        else:
            kept.append(segment)
    return urlunsplit((parts.scheme, parts.netloc, "/".join(kept), parts.query, parts.fragment))


def _matches(target: _Url, prefixes: list[str]) -> bool:
    for prefix in prefixes:
        parsed = _parse(prefix)
        if parsed is not None and target.under(parsed):
            return True
    return False


def fhir_server_allowed(url: str, settings: Settings, claims: Issued | None = None) -> str | None:
    """None when `url` may be called, else the reason (for the log; the EHR sees a generic 412)."""
    target = _parse(url)
    if target is None:
        return "malformed fhirServer URL"
    loopback = is_loopback_host(target.host)
    if target.scheme != "https" and not loopback:
        return "fhirServer must use https"
    global_list = list(settings.fhir_server_allowlist)
    if claims is None:
        if settings.auth != "off":
            return "no verified issuer"
        if global_list:
            return None if _matches(target, global_list) else "not on CDS_FHIR_SERVER_ALLOWLIST"
        return None if loopback else "auth off and no allowlist: loopback only"
    issuer = settings.jwt_issuers.get(claims.iss)
    issuer_list = list(issuer.fhir_servers) if issuer is not None else []
    if not global_list and not issuer_list:
        return "no FHIR server allowlist configured for this issuer"
    if issuer_list and not _matches(target, issuer_list):
        return "not on the issuer's fhir_servers"
    if global_list and not _matches(target, global_list):
        return "not on CDS_FHIR_SERVER_ALLOWLIST"
    return None


def check_fhir_server(url: str, settings: Settings, claims: Issued | None = None) -> None:
    reason = fhir_server_allowed(url, settings, claims)
    if reason is not None:
        raise FhirServerNotAllowed(f"fhirServer is not on this service's allowlist ({reason})")


def validate_allowlist(settings: Settings) -> None:
    named = [("CDS_FHIR_SERVER_ALLOWLIST", p) for p in settings.fhir_server_allowlist]
    for iss, cfg in settings.jwt_issuers.items():
        named += [(f"CDS_JWT_ISSUERS[{iss!r}].fhir_servers", p) for p in cfg.fhir_servers]
    for where, prefix in named:
        parsed = _parse(prefix)
        if parsed is None:
            raise RuntimeError(f"{where}: {prefix!r} is not a plain http(s) base URL")
        if parsed.scheme != "https" and not is_loopback_host(parsed.host):
            raise RuntimeError(f"{where}: {prefix!r} must use https (plain http only on loopback)")


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme)


def same_base(url: str, base: str) -> bool:
    """True when `url` has the scheme, host, port and base path of `base` (where the token may go)."""
    plain = normalise_url(url)  # as a server that decodes %2e and resolves `..` reads it: inside too
    if plain is None or (plain != url and not same_base(plain, base)):
        return False
    try:
        u, b = urlsplit(url), urlsplit(base)
        u_port, b_port = u.port or _default_port(u.scheme.lower()), b.port or _default_port(b.scheme.lower())
    except ValueError:
        return False
    if u.scheme.lower() not in ("http", "https") or u.scheme.lower() != b.scheme.lower():
        return False
    if not u.hostname or u.hostname != b.hostname or u_port != b_port or u.username or u.password:
        return False
    segments = u.path.split("/")
    if (
        ".." in segments
        or "." in segments
        or posixpath.normpath(u.path or "/") != (u.path.rstrip("/") or "/")
    ):
        return False
    base_path = b.path.rstrip("/")
    return u.path.rstrip("/") == base_path or u.path.startswith(base_path + "/")


def pool_limits(settings: Settings) -> httpx.Limits:
    """Connection limits of the app's one client; cds.fhir_io.FhirReader keeps its GETs below them."""
    concurrency = settings.fhir_max_concurrency
    return httpx.Limits(
        max_connections=max(concurrency * 4, 16), max_keepalive_connections=max(concurrency, 8)
    )


def no_cookies() -> CookieJar:
    """A jar that keeps no cookie, for the app client: one client serves every EHR user and patient,
    and a cookie one FHIR server set for one token must not ride along with the next token's reads."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def http_client(settings: Settings) -> httpx.AsyncClient:
    """The app's one outbound client (FHIR reads, JWKS), built in the lifespan (cds/app.py). No
    `transport=`: httpx then builds its own AsyncHTTPTransport with these limits, and mounts the proxies
    the environment names (HTTPS_PROXY, NO_PROXY …), which it does only for a client it builds itself."""
    return httpx.AsyncClient(
        follow_redirects=False,
        limits=pool_limits(settings),
        timeout=httpx.Timeout(settings.fhir_timeout_s),
        cookies=no_cookies(),
    )
