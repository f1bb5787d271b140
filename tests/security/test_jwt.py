"""The Authenticator against real ES384/RS384 keys served as JWKS by a real loopback HTTP server."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request

from cds.auth import Authenticator, Claims, validate_startup
from cds.errors import Unauthorized
from cds.settings import IssuerConfig, Settings
from tests.support.jwks import DROP, JwksServer, SigningKey, issuer_settings

ISS = "https://ehr.example.org/fhir"
BASE = "https://cds.example.org"
URL = f"{BASE}/cds-services/pml-plex-select"


def request(token: str | None = None, *, scheme: str = "Bearer") -> Request:
    headers = [] if token is None else [(b"authorization", f"{scheme} {token}".encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})


@pytest.fixture(scope="module")
def keys() -> Iterator[JwksServer]:
    server = JwksServer()
    server.add_key("ehr", "ES384")
    server.add_key("ehr", "RS384")
    server.add_key("other", "ES384")
    with server.serve():
        yield server


@pytest.fixture
def settings(keys: JwksServer) -> Settings:
    return issuer_settings(
        ISS,
        public_base_url=BASE,
        issuer=IssuerConfig(jwks_url=keys.url("ehr"), allowed_jku=[keys.url("ehr")], tenants=["t1", "t2"]),
    )


@pytest.fixture
async def auth(settings: Settings) -> AsyncIterator[Authenticator]:
    async with httpx.AsyncClient() as http:
        a = Authenticator(settings, http, jwks_min_refetch_s=0)
        yield a
        await a.close()


def es(keys: JwksServer) -> SigningKey:
    return keys.keysets["ehr"][0]


def rs(keys: JwksServer) -> SigningKey:
    return keys.keysets["ehr"][1]


def _valid_claims() -> dict[str, Any]:
    """Claims a genuine EHR token would carry (the forged tokens below differ only in how they are signed)."""
    now = int(time.time())
    return {"iss": ISS, "aud": URL, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}


def _hs256_with_public_key(k: JwksServer) -> str:
    pem = (
        es(k)
        .private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    payload = _valid_claims()
    # PyJWT refuses PEM keys as HMAC secrets, so sign HS256 by hand, as an attacker would
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": es(k).kid}).encode())
        + "."
        + b64(json.dumps(payload).encode())
    )
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


def _alg_none(k: JwksServer) -> str:
    payload = _valid_claims()
    return jwt.encode(payload, None, algorithm="none", headers={"kid": es(k).kid})


def _bad_signature(k: JwksServer) -> str:
    token = es(k).token(iss=ISS, aud=URL, tenant="t1")
    head, _, sig = token.split(".")
    other = es(k).token(iss=ISS, aud=URL, tenant="t2")
    return f"{head}.{other.split('.')[1]}.{sig}"


def now() -> int:
    return int(time.time())


def _es512(k: JwksServer) -> str:
    payload = {
        "iss": ISS,
        "aud": URL,
        "iat": now(),
        "exp": now() + 300,
        "jti": uuid.uuid4().hex,
        "tenant": "t1",
    }
    return jwt.encode(
        payload, ec.generate_private_key(ec.SECP521R1()), algorithm="ES512", headers={"kid": es(k).kid}
    )


VALID: dict[str, Any] = {
    "ES384": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1"),
    "RS384": lambda k: rs(k).token(iss=ISS, aud=URL, tenant="t1"),
    "ES384 with allowed jku": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", jku=k.url("ehr")),
    "aud as array": lambda k: es(k).token(iss=ISS, aud=["https://x.example", URL], tenant="t1"),
    "Epic-style nbf 5 min early, sub, extra claims": lambda k: rs(k).token(
        iss=ISS, aud=URL, tenant="t2", nbf=now() - 300, sub="epic-client-id", epic_extra={"a": 1}
    ),
    "no typ header": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", headers={"typ": DROP}),
    "iat slightly ahead (within skew)": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", now=now() + 30),
    "expired within skew": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", now=now() - 320),
}

INVALID: dict[str, Any] = {
    "missing header": None,
    "not Bearer": "basic",
    "garbage": lambda k: "not-a-jwt",
    "alg none": _alg_none,
    "HS256 with the public key as secret": _hs256_with_public_key,
    "ES512 not allowed": _es512,
    "bad signature": _bad_signature,
    "signed by a key not in the JWKS, same kid": lambda k: SigningKey.generate("ES384", es(k).kid).token(
        iss=ISS, aud=URL, tenant="t1"
    ),
    "RS384 header on an EC key": lambda k: jwt.encode(
        {"iss": ISS, "aud": URL, "iat": now(), "exp": now() + 300, "jti": uuid.uuid4().hex, "tenant": "t1"},
        rs(k).private_key,
        algorithm="RS384",
        headers={"kid": es(k).kid},
    ),
    "kid missing": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", headers={"kid": DROP}),
    "unknown kid (after one refetch)": lambda k: SigningKey.generate("ES384", "nobody").token(
        iss=ISS, aud=URL, tenant="t1"
    ),
    "typ not JWT": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", headers={"typ": "at+jwt"}),
    "iss not allowlisted": lambda k: es(k).token(iss="https://evil.example", aud=URL, tenant="t1"),
    "iss missing": lambda k: es(k).token(iss=DROP, aud=URL, tenant="t1"),
    "jku not allowlisted": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", jku=k.url("other")),
    "jku on another host": lambda k: es(k).token(
        iss=ISS, aud=URL, tenant="t1", jku="https://evil.example/jwks.json"
    ),
    "aud mismatch (string)": lambda k: es(k).token(iss=ISS, aud=f"{BASE}/cds-services/other", tenant="t1"),
    "aud mismatch (array)": lambda k: es(k).token(
        iss=ISS, aud=["https://x.example", f"{URL}/feedback"], tenant="t1"
    ),
    "aud of the Host header, not the public URL": lambda k: es(k).token(
        iss=ISS, aud="http://127.0.0.1:8080/cds-services/pml-plex-select", tenant="t1"
    ),
    "aud missing": lambda k: es(k).token(iss=ISS, aud=DROP, tenant="t1"),
    "expired": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", now=now() - 600),
    "nbf in the future": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", nbf=now() + 600),
    "iat in the future": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", now=now() + 600),
    "iat missing": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", iat=DROP),
    "exp missing": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", exp=DROP),
    "lifetime over the maximum": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", lifetime_s=7200),
    "jti missing": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", jti=DROP),
    "jti empty": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t1", jti=""),
    "tenant not allowed": lambda k: es(k).token(iss=ISS, aud=URL, tenant="t3"),
    "tenant missing where required": lambda k: es(k).token(iss=ISS, aud=URL),
}


# what the log says for each refusal: each case fails for its own reason, not an earlier one
REASONS = {
    "missing header": "no Authorization header",
    "not Bearer": "Authorization is not a Bearer token",
    "garbage": "malformed token (DecodeError)",
    "alg none": "algorithm not allowed",
    "HS256 with the public key as secret": "algorithm not allowed",
    "ES512 not allowed": "algorithm not allowed",
    "bad signature": "claims or signature invalid (InvalidSignatureError)",
    "signed by a key not in the JWKS, same kid": "claims or signature invalid (InvalidSignatureError)",
    "RS384 header on an EC key": "key type does not match alg",
    "kid missing": "kid missing",
    "unknown kid (after one refetch)": "unknown kid",
    "typ not JWT": "typ is not JWT",
    "iss not allowlisted": "issuer not allowlisted",
    "iss missing": "issuer not allowlisted",
    "jku not allowlisted": "jku not allowlisted",
    "jku on another host": "jku not allowlisted",
    "aud mismatch (string)": "claims or signature invalid (InvalidAudienceError)",
    "aud mismatch (array)": "claims or signature invalid (InvalidAudienceError)",
    "aud of the Host header, not the public URL": "claims or signature invalid (InvalidAudienceError)",
    "aud missing": "claims or signature invalid (MissingRequiredClaimError)",
    "expired": "claims or signature invalid (ExpiredSignatureError)",
    "nbf in the future": "claims or signature invalid (ImmatureSignatureError)",
    "iat in the future": "claims or signature invalid (ImmatureSignatureError)",
    "iat missing": "claims or signature invalid (MissingRequiredClaimError)",
    "exp missing": "claims or signature invalid (MissingRequiredClaimError)",
    "lifetime over the maximum": "token lifetime too long",
    "jti missing": "claims or signature invalid (MissingRequiredClaimError)",
    "jti empty": "jti missing or invalid",
    "tenant not allowed": "tenant not allowlisted",
    "tenant missing where required": "tenant not allowlisted",
}


@pytest.mark.parametrize("case", list(VALID))
async def test_valid_tokens_are_accepted(case: str, keys: JwksServer, auth: Authenticator) -> None:
    token = VALID[case](keys)
    claims = await auth.check(request(token), URL)
    assert isinstance(claims, Claims)
    assert claims.iss == ISS and claims.tenant in ("t1", "t2") and claims.jti


@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_tokens_are_refused(
    case: str, keys: JwksServer, auth: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    spec = INVALID[case]
    if spec is None:
        req = request()
        token = ""
    elif isinstance(spec, str):
        token = es(keys).token(iss=ISS, aud=URL, tenant="t1")
        req = request(token, scheme=spec)
    else:
        token = spec(keys)
        req = request(token)
    with caplog.at_level(logging.INFO, logger="cds.auth"), pytest.raises(Unauthorized) as refused:
        await auth.check(req, URL)
    assert refused.value.message == REASONS[case]
    assert any(r.name == "cds.auth" for r in caplog.records), "the reason is logged"
    if token:
        for part in token.split("."):
            if len(part) > 8:
                assert part not in caplog.text, "the token never reaches the log"


async def test_replayed_jti_is_refused(keys: JwksServer, auth: Authenticator) -> None:
    token = es(keys).token(iss=ISS, aud=URL, tenant="t1")
    assert await auth.check(request(token), URL)
    with pytest.raises(Unauthorized):
        await auth.check(request(token), URL)
    # the same jti in a new token is still a replay
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    with pytest.raises(Unauthorized):
        await auth.check(request(rs(keys).token(iss=ISS, aud=URL, tenant="t1", jti=jti)), URL)


async def test_unknown_kid_costs_exactly_one_refetch(keys: JwksServer, auth: Authenticator) -> None:
    assert await auth.check(request(es(keys).token(iss=ISS, aud=URL, tenant="t1")), URL)
    before = keys.fetches["ehr"]
    with pytest.raises(Unauthorized):
        await auth.check(
            request(SigningKey.generate("ES384", "ghost").token(iss=ISS, aud=URL, tenant="t1")), URL
        )
    assert keys.fetches["ehr"] == before + 1


async def test_unknown_kid_refetches_are_rate_limited(keys: JwksServer, settings: Settings) -> None:
    async with httpx.AsyncClient() as http:
        auth = Authenticator(settings, http, jwks_min_refetch_s=60)
        assert await auth.check(request(es(keys).token(iss=ISS, aud=URL, tenant="t1")), URL)
        before = keys.fetches["ehr"]
        for _ in range(5):
            with pytest.raises(Unauthorized):
                await auth.check(
                    request(SigningKey.generate("ES384").token(iss=ISS, aud=URL, tenant="t1")), URL
                )
        assert keys.fetches["ehr"] == before


async def test_concurrent_first_calls_share_one_fetch(keys: JwksServer, settings: Settings) -> None:
    async with httpx.AsyncClient() as http:
        auth = Authenticator(settings, http)
        before = keys.fetches["ehr"]
        tokens = [es(keys).token(iss=ISS, aud=URL, tenant="t1") for _ in range(10)]
        results = await asyncio.gather(*(auth.check(request(t), URL) for t in tokens))
        assert all(results)
        assert keys.fetches["ehr"] == before + 1


async def test_key_rotation_is_accepted_after_one_refetch() -> None:
    server = JwksServer()
    old = server.add_key("ehr", "ES384")
    with server.serve():
        settings = issuer_settings(ISS, server.url("ehr"), public_base_url=BASE)
        async with httpx.AsyncClient() as http:
            auth = Authenticator(settings, http, jwks_min_refetch_s=0)
            assert await auth.check(request(old.token(iss=ISS, aud=URL, jku=server.url("ehr"))), URL)
            assert server.fetches["ehr"] == 1
            new = server.add_key("ehr", "RS384")  # the EHR publishes a new key and signs with it
            server.keysets["ehr"].remove(old)
            assert await auth.check(request(new.token(iss=ISS, aud=URL, jku=server.url("ehr"))), URL)
            assert server.fetches["ehr"] == 2
            assert await auth.check(request(new.token(iss=ISS, aud=URL)), URL)
            assert server.fetches["ehr"] == 2


@pytest.mark.parametrize("ttl_s", [300.0, 0.05], ids=["within-ttl", "ttl-expired"])
async def test_cached_keys_survive_a_jwks_outage(ttl_s: float) -> None:
    server = JwksServer()
    key = server.add_key("ehr", "ES384")
    with server.serve():
        url = server.url("ehr")
        settings = issuer_settings(ISS, url, public_base_url=BASE)
        async with httpx.AsyncClient() as http:
            auth = Authenticator(settings, http, jwks_ttl_s=ttl_s, jwks_min_refetch_s=0)
            assert await auth.check(request(key.token(iss=ISS, aud=URL)), URL)
    # the JWKS server is gone now
    async with httpx.AsyncClient() as http2:
        with pytest.raises(httpx.ConnectError):
            await http2.get(url)
        auth.jwks.http = http2
        await asyncio.sleep(ttl_s if ttl_s < 1 else 0)
        assert await auth.check(request(key.token(iss=ISS, aud=URL)), URL)
        assert await auth.check(request(key.token(iss=ISS, aud=URL, jku=url)), URL)
        with pytest.raises(Unauthorized):  # an unknown kid still fails
            await auth.check(request(SigningKey.generate("ES384").token(iss=ISS, aud=URL)), URL)


async def test_no_keys_ever_fetched_fails_closed() -> None:
    settings = issuer_settings(ISS, "http://127.0.0.1:9/jwks.json", public_base_url=BASE)
    async with httpx.AsyncClient() as http:
        auth = Authenticator(settings, http)
        with pytest.raises(Unauthorized):
            await auth.check(request(SigningKey.generate().token(iss=ISS, aud=URL)), URL)


async def test_static_jwks_inline_and_file(tmp_path: Any) -> None:
    inline, filed = SigningKey.generate("ES384"), SigningKey.generate("RS384")
    path = tmp_path / "jwks.json"
    path.write_text(__import__("json").dumps({"keys": [filed.public_jwk]}))
    settings = Settings(
        _env_file=None,
        auth="jwt",
        public_base_url=BASE,
        jwt_issuers={
            "https://a.example": IssuerConfig(jwks={"keys": [inline.public_jwk]}),
            "https://b.example": IssuerConfig(jwks_file=path),
        },
    )
    validate_startup(settings)
    async with httpx.AsyncClient() as http:
        auth = Authenticator(settings, http)
        assert await auth.check(request(inline.token(iss="https://a.example", aud=URL)), URL)
        assert await auth.check(request(filed.token(iss="https://b.example", aud=URL)), URL)
        with pytest.raises(Unauthorized):  # a's key does not speak for b
            await auth.check(request(inline.token(iss="https://b.example", aud=URL)), URL)


async def test_auth_off_checks_nothing() -> None:
    settings = Settings(_env_file=None, auth="off")
    async with httpx.AsyncClient() as http:
        assert await Authenticator(settings, http).check(request(), URL) is None


def test_startup_refuses_jwt_without_issuers() -> None:
    with pytest.raises(RuntimeError, match="no issuer is configured"):
        validate_startup(Settings(_env_file=None, auth="jwt", jwt_issuers={}))


@pytest.mark.parametrize(
    "issuer, message",
    [
        (IssuerConfig(), "names no keys"),
        (IssuerConfig(jwks_url="http://keys.example.org/jwks.json"), "must be an https URL"),
        (IssuerConfig(allowed_jku=["ftp://keys.example.org/jwks.json"]), "must be an https URL"),
        (IssuerConfig(jwks_file="/nonexistent/jwks.json"), "cannot read its JWKS"),
        (IssuerConfig(jwks={"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}), "no usable signing key"),
        (
            IssuerConfig(jwks_url="https://k.example/j", fhir_servers=["http://ehr.example.org/fhir"]),
            "must use https",
        ),
    ],
)
def test_startup_refuses_unusable_issuers(issuer: IssuerConfig, message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        validate_startup(Settings(_env_file=None, auth="jwt", jwt_issuers={ISS: issuer}))


def test_startup_warns_when_auth_is_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cds.auth"):
        validate_startup(Settings(_env_file=None, auth="off"))
    assert "CDS_AUTH=off" in caplog.text


def test_startup_accepts_a_sandbox_profile() -> None:
    validate_startup(
        Settings(
            _env_file=None,
            auth="jwt",
            public_base_url="https://cds.example.org",
            jwt_issuers={
                "https://sandbox.cds-hooks.org": IssuerConfig(
                    allowed_jku=["https://sandbox.cds-hooks.org/.well-known/jwks.json"],
                    fhir_servers=["https://launch.smarthealthit.org/v/r4/fhir"],
                )
            },
        )
    )
