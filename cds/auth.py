"""Authentication of the calling EHR (CDS Hooks 2.0 "Trusting CDS Clients").

CONTRACT (signatures are fixed):
    Authenticator(settings, http).check(request, endpoint_url) -> Claims | None
        raises cds.errors.Unauthorized on any failure of the token (the response is a bare 401; the
        reason goes to the log, never the token), cds.errors.ReplayStoreUnavailable (503) when the jti
        store cannot answer (a fault of ours, not the EHR's credentials). With settings.auth == "off"
        it returns None.
    validate_startup(settings) -> None
        raises RuntimeError when the trust configuration cannot work (CDS_AUTH=jwt with no issuer,
        an issuer without keys, an unreadable JWKS file, plain-http key or FHIR URLs off loopback);
        logs a warning when CDS_AUTH=off.

What a token must satisfy (https://cds-hooks.hl7.org/2.0/#trusting-cds-clients and best-practices.md):
  * `Authorization: Bearer <JWT>`;
  * header `alg` in ES384, RS384, ES256, RS256 (never `none` or HMAC), `kid` present, `typ` JWT if sent;
  * `iss` in CDS_JWT_ISSUERS; a `jku` header, if sent, in that issuer's `allowed_jku` (its `jwks_url`
    counts as allowed); the `kid` is looked up first in the issuer's pinned keys (`jwks` inline,
    `jwks_file`), with no network (air-gapped sites pin the keys of an EHR that always sends `jku`),
    then fetched from that `jku`; without `jku`: pinned keys, then `jwks_url`;
  * `aud` equal to `endpoint_url` (string, or an array that contains it); `endpoint_url` is built by
    the routes from CDS_PUBLIC_BASE_URL, never from the Host header;
  * `exp`, `iat`, `nbf` checked with CDS_JWT_CLOCK_SKEW_S leeway; `exp - iat` at most
    CDS_JWT_MAX_LIFETIME_S; `tenant` in the issuer's `tenants` when that list is set;
  * signature by the JWK named by `kid` (key type and curve must match `alg`);
  * `jti` present and never seen before for this `iss` (cds.replay keeps it until `exp` + skew).

JWKS are cached per URL for `jwks_ttl_s`; an unknown `kid` triggers one refetch (at most one per URL
every `jwks_min_refetch_s`); when a fetch fails the last good keys keep serving for `jwks_max_stale_s`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cachetools import TTLCache
from starlette.requests import Request

from cds.errors import ReplayStoreUnavailable, Unauthorized
from cds.outbound import is_loopback_host, validate_allowlist
from cds.replay import ReplayStore, open_replay_store
from cds.settings import IssuerConfig, Settings

__all__ = ["ALLOWED_ALGORITHMS", "Authenticator", "Claims", "JwksCache", "validate_startup"]

log = logging.getLogger("cds.auth")

ALLOWED_ALGORITHMS = frozenset({"ES384", "RS384", "ES256", "RS256"})
_KEY_TYPE = {
    "ES384": ("EC", "P-384"),
    "ES256": ("EC", "P-256"),
    "RS384": ("RSA", None),
    "RS256": ("RSA", None),
}
_MAX_TOKEN_CHARS = 16_384
_MAX_JTI_CHARS = 256
_MAX_JWKS_BYTES = 256 * 1024


@dataclass(frozen=True)
class Claims:
    iss: str
    jti: str
    tenant: str | None = None


class _Reject(Exception):
    """Internal: a reason to refuse the token (logged, never sent)."""


def _check_key_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return
    raise RuntimeError(f"{what} must be an https URL (plain http only on loopback): {url!r}")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A JWKS signing key and what its JWK declares about itself (PyJWK keeps these only privately)."""

    jwk: jwt.PyJWK
    crv: str | None  # the JWK's "crv", for EC keys
    alg: str | None  # the JWK's own "alg", when it names one


def _parse_jwks(data: Any) -> dict[str, SigningKey]:
    """kid -> public key. Keys without kid, encryption keys and private keys are skipped."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWK Set")  # noqa: TRY004 - callers treat every bad JWKS alike
    keys: dict[str, SigningKey] = {}
    for item in data["keys"]:
        if not isinstance(item, dict) or not isinstance(item.get("kid"), str):
            continue
        if item.get("use", "sig") != "sig" or "d" in item:
            continue
        try:
            jwk = jwt.PyJWK(item)
        except jwt.PyJWTError:
            continue
        crv, alg = item.get("crv"), item.get("alg")
        keys[item["kid"]] = SigningKey(
            jwk, crv if isinstance(crv, str) else None, alg if isinstance(alg, str) else None
        )
    return keys


def _static_keys(cfg: IssuerConfig) -> dict[str, SigningKey]:
    keys: dict[str, SigningKey] = {}
    if cfg.jwks_file is not None:
        keys.update(_parse_jwks(json.loads(cfg.jwks_file.read_text(encoding="utf-8"))))
    if cfg.jwks is not None:
        keys.update(_parse_jwks(cfg.jwks))
    return keys


@dataclass
class _Fetched:
    keys: dict[str, SigningKey]
    at: float  # time.monotonic() of the successful fetch


class JwksCache:
    """JWKS per URL: fresh for `ttl_s`, one refetch on an unknown kid (rate-limited), stale on outage."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        ttl_s: float = 300.0,
        min_refetch_s: float = 10.0,
        max_stale_s: float = 3600.0,
        timeout_s: float = 1.5,
    ) -> None:
        self.http = http
        self.min_refetch_s = min_refetch_s
        self.max_stale_s = max_stale_s
        self.timeout_s = timeout_s
        self._fresh: TTLCache[str, dict[str, SigningKey]] = TTLCache(maxsize=256, ttl=ttl_s)
        self._last_good: dict[str, _Fetched] = {}  # URLs come from configuration only: bounded
        self._last_attempt: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Future[dict[str, SigningKey]]] = {}

    async def key(self, url: str, kid: str) -> SigningKey | None:
        keys = await self._keys(url)
        if kid in keys:
            return keys[kid]
        if time.monotonic() - self._last_attempt.get(url, float("-inf")) >= self.min_refetch_s:
            keys = await self._refresh(url)
        return keys.get(kid)

    async def _keys(self, url: str) -> dict[str, SigningKey]:
        fresh = self._fresh.get(url)
        if fresh is not None:
            return fresh
        now = time.monotonic()
        last = self._last_good.get(url)
        recently_tried = now - self._last_attempt.get(url, float("-inf")) < self.min_refetch_s
        if recently_tried and last is not None and now - last.at <= self.max_stale_s:
            return last.keys  # a fetch just failed: serve the last good keys without hammering
        return await self._refresh(url)

    async def _refresh(self, url: str) -> dict[str, SigningKey]:
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.ensure_future(self._fetch(url))
            self._inflight[url] = task
            task.add_done_callback(lambda _t: self._inflight.pop(url, None))
        return await asyncio.shield(task)

    async def _fetch(self, url: str) -> dict[str, SigningKey]:
        self._last_attempt[url] = time.monotonic()
        try:
            async with self.http.stream(
                "GET",
                url,
                timeout=self.timeout_s,
                follow_redirects=False,
                headers={"Accept": "application/json, application/jwk-set+json"},
            ) as response:
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_JWKS_BYTES:
                        raise ValueError("JWKS too large")
            keys = _parse_jwks(json.loads(body))
        except Exception as exc:  # noqa: BLE001 - network, status, size, JSON: keep the last good keys
            last = self._last_good.get(url)
            stale_ok = last is not None and time.monotonic() - last.at <= self.max_stale_s
            log.warning(
                "jwks fetch failed",
                extra={"jwks_url": url, "error": type(exc).__name__, "serving_stale": stale_ok},
            )
            return last.keys if stale_ok and last is not None else {}
        self._fresh[url] = keys
        self._last_good[url] = _Fetched(keys, time.monotonic())
        return keys


class Authenticator:
    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        replay: ReplayStore | None = None,
        jwks_ttl_s: float = 300.0,
        jwks_min_refetch_s: float = 10.0,
        jwks_max_stale_s: float = 3600.0,
        jwks_timeout_s: float = 1.5,
    ) -> None:
        self.settings = settings
        self.http = http
        self.jwks = JwksCache(
            http,
            ttl_s=jwks_ttl_s,
            min_refetch_s=jwks_min_refetch_s,
            max_stale_s=jwks_max_stale_s,
            timeout_s=jwks_timeout_s,
        )
        self._replay = replay
        self._static: dict[str, dict[str, SigningKey]] = {}

    @property
    def replay(self) -> ReplayStore:
        if self._replay is None:
            self._replay = open_replay_store(self.settings)
        return self._replay

    async def check(self, request: Request, endpoint_url: str) -> Claims | None:
        if self.settings.auth == "off":
            return None
        context: dict[str, Any] = {}
        try:
            return await self._verify(request, endpoint_url, context)
        except _Reject as reason:
            log.warning("jwt rejected", extra={"reason": str(reason), "endpoint": endpoint_url, **context})
            raise Unauthorized(str(reason)) from None
        except ReplayStoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - fail closed on anything unexpected
            log.error(
                "jwt check failed", extra={"error": type(exc).__name__, "endpoint": endpoint_url, **context}
            )
            raise Unauthorized("verification error") from None

    async def _verify(self, request: Request, endpoint_url: str, context: dict[str, Any]) -> Claims:
        token = _bearer(request)
        header, iss, cfg = self._unverified(token, context)
        alg, kid = header["alg"], header["kid"]
        key = await self._key(cfg, iss, header, kid)
        kty, crv = _KEY_TYPE[alg]
        if key.jwk.key_type != kty or (crv and key.crv != crv):
            raise _Reject("key type does not match alg")
        if key.alg not in (None, alg):
            raise _Reject("key is for another alg")
        skew = self.settings.jwt_clock_skew_s
        try:
            claims = jwt.decode(
                token,
                key.jwk.key,
                algorithms=[alg],
                audience=endpoint_url,
                issuer=iss,
                leeway=skew,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise _Reject(f"claims or signature invalid ({type(exc).__name__})") from None
        tenant, jti = self._checked_claims(claims, cfg, context)
        if not await self._first_use(iss, jti, int(claims["exp"]) + skew, context):
            raise _Reject("jti replayed")
        return Claims(iss=iss, jti=jti, tenant=tenant)

    def _unverified(self, token: str, context: dict[str, Any]) -> tuple[dict[str, Any], str, IssuerConfig]:
        """The header (its `alg` allowed, its `kid` a non-empty string), the issuer and its configuration,
        read before any key is chosen: nothing here is trusted yet."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _Reject(f"malformed token ({type(exc).__name__})") from None
        alg, kid, iss = header.get("alg"), header.get("kid"), unverified.get("iss")
        context.update(alg=_short(alg), kid=_short(kid), iss=_short(iss))
        if alg not in ALLOWED_ALGORITHMS:
            raise _Reject("algorithm not allowed")
        if not isinstance(kid, str) or not kid:
            raise _Reject("kid missing")
        if "typ" in header and str(header["typ"]).upper() != "JWT":
            raise _Reject("typ is not JWT")
        if not isinstance(iss, str) or iss not in self.settings.jwt_issuers:
            raise _Reject("issuer not allowlisted")
        return header, iss, self.settings.jwt_issuers[iss]

    def _checked_claims(
        self, claims: dict[str, Any], cfg: IssuerConfig, context: dict[str, Any]
    ) -> tuple[str | None, str]:
        """(tenant, jti) of claims whose signature, aud, iss and exp PyJWT has checked; the rest here."""
        exp, iat = claims["exp"], claims["iat"]
        if iat > time.time() + self.settings.jwt_clock_skew_s:
            raise _Reject("iat in the future")
        if exp - iat > self.settings.jwt_max_lifetime_s:
            raise _Reject("token lifetime too long")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise _Reject("tenant is not a string")
        context["tenant"] = _short(tenant)
        if cfg.tenants and tenant not in cfg.tenants:
            raise _Reject("tenant not allowlisted")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI_CHARS:
            raise _Reject("jti missing or invalid")
        context["jti"] = jti
        return tenant, jti

    async def _first_use(self, iss: str, jti: str, expires_at: int, context: dict[str, Any]) -> bool:
        """The replay store's answer; its failure (Redis down, full) is a 503, never a 401."""
        try:
            return await self.replay.first_use(iss, jti, expires_at)
        except Exception as exc:  # noqa: BLE001 - any store error: we cannot tell, and it is our fault
            log.error("jti replay store unavailable", extra={"error": type(exc).__name__, **context})
            raise ReplayStoreUnavailable() from None

    async def _key(self, cfg: IssuerConfig, iss: str, header: dict[str, Any], kid: str) -> SigningKey:
        jku = header.get("jku")
        if jku is not None:
            allowed = set(cfg.allowed_jku) | ({cfg.jwks_url} if cfg.jwks_url else set())
            if not isinstance(jku, str) or jku not in allowed:
                raise _Reject("jku not allowlisted")
        if iss not in self._static:
            self._static[iss] = _static_keys(cfg)
        found = self._static[iss].get(kid)  # a pinned key needs no network, jku or not
        if found is None and jku is not None:
            found = await self.jwks.key(jku, kid)
        elif found is None and cfg.jwks_url:
            found = await self.jwks.key(cfg.jwks_url, kid)
        if found is None:
            raise _Reject("unknown kid")
        return found

    async def close(self) -> None:
        if self._replay is not None:
            await self._replay.close()


def _bearer(request: Request) -> str:
    value: str | None = request.headers.get("authorization")
    if not value:
        raise _Reject("no Authorization header")
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _Reject("Authorization is not a Bearer token")
    if len(token) > _MAX_TOKEN_CHARS:
        raise _Reject("token too long")
    return token


def _short(value: Any) -> str | None:
    """Header/claim values from an unverified token, safe to log (bounded, always a string)."""
    return None if value is None else str(value)[:200]


def validate_startup(settings: Settings) -> None:
    """Refuse a trust configuration that cannot work; say why. Call once from create_app."""
    validate_allowlist(settings)
    base = urlsplit(settings.public_base_url)
    if base.scheme not in ("http", "https") or not base.hostname:
        raise RuntimeError(
            f"CDS_PUBLIC_BASE_URL must be an absolute http(s) URL: {settings.public_base_url!r}"
        )
    if settings.auth == "off":
        log.warning(
            "CDS_AUTH=off: CDS Hooks calls are NOT authenticated (demo and local testing only); "
            "FHIR servers are still limited to CDS_FHIR_SERVER_ALLOWLIST, or loopback when it is empty"
        )
        return
    if not settings.jwt_issuers:
        raise RuntimeError(
            "CDS_AUTH=jwt but no issuer is configured: set CDS_JWT_ISSUERS, e.g. "
            '\'{"https://sandbox.cds-hooks.org": {"allowed_jku": '
            '["https://sandbox.cds-hooks.org/.well-known/jwks.json"]}}\', '
            "or set CDS_AUTH=off for the demo and local testing"
        )
    for iss, cfg in settings.jwt_issuers.items():
        if not (cfg.jwks_url or cfg.jwks_file or cfg.jwks or cfg.allowed_jku):
            raise RuntimeError(
                f"CDS_JWT_ISSUERS[{iss!r}] names no keys: set jwks_url, jwks_file, jwks or allowed_jku"
            )
        for url in ([cfg.jwks_url] if cfg.jwks_url else []) + list(cfg.allowed_jku):
            _check_key_url(url, f"CDS_JWT_ISSUERS[{iss!r}] JWKS URL")
        try:
            static = _static_keys(cfg)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"CDS_JWT_ISSUERS[{iss!r}]: cannot read its JWKS: {exc}") from None
        if (cfg.jwks_file or cfg.jwks) and not static:
            raise RuntimeError(
                f"CDS_JWT_ISSUERS[{iss!r}]: its static JWKS holds no usable signing key with a kid"
            )
    if base.scheme != "https" and not is_loopback_host(base.hostname):
        log.warning("CDS_PUBLIC_BASE_URL is not https; EHRs will sign aud for the URL they call")
