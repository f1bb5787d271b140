"""Real keys, a real JWKS server on loopback, and signed CDS Hooks JWTs, for any test that needs auth.

    keys = JwksServer()                       # a Starlette app; keysets by name, fetch counts
    ehr = keys.add_key("ehr", "ES384")        # SigningKey: ES384/ES256 (EC) or RS384/RS256 (RSA)
    with keys.serve() as jwks_base:           # uvicorn on a free loopback port
        jwks_url = keys.url("ehr")            # f"{jwks_base}/jwks/ehr.json"
        settings = Settings(auth="jwt", jwt_issuers={ISS: IssuerConfig(jwks_url=jwks_url)}, ...)
        token = ehr.token(iss=ISS, aud=f"{settings.public_base_url}/cds-services", jku=jwks_url)
        headers = {"Authorization": f"Bearer {token}"}

`issuer_settings(...)` builds the usual Settings; `SigningKey.token(**overrides)` sets or (with
`DROP`) removes any claim or header field, so negative tests can say exactly what is wrong.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import serve_asgi

DROP = object()  # pass as a claim/header value to leave it out

_CURVES = {"ES384": ec.SECP384R1, "ES256": ec.SECP256R1}


@dataclass
class SigningKey:
    alg: str
    kid: str
    private_key: Any

    @classmethod
    def generate(cls, alg: str = "ES384", kid: str | None = None) -> SigningKey:
        if alg in _CURVES:
            private = ec.generate_private_key(_CURVES[alg]())
        elif alg in ("RS384", "RS256"):
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ValueError(alg)
        return cls(alg, kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}", private)

    @property
    def public_jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.ECAlgorithm if self.alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
        jwk = json.loads(algo.to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def token(
        self,
        *,
        iss: str,
        aud: str | list[str],
        jku: str | None = None,
        lifetime_s: int = 300,
        now: float | None = None,
        headers: dict[str, Any] | None = None,
        alg: str | None = None,
        key: Any = None,
        **claims: Any,
    ) -> str:
        """A CDS Hooks client JWT as the Sandbox and Inferno sign it; overrides win, DROP removes."""
        issued = int(now if now is not None else time.time())
        payload: dict[str, Any] = {
            "iss": iss,
            "aud": aud,
            "iat": issued,
            "exp": issued + lifetime_s,
            "jti": uuid.uuid4().hex,
        }
        payload.update(claims)
        header: dict[str, Any] = {"kid": self.kid, "typ": "JWT"}
        if jku is not None:
            header["jku"] = jku
        header.update(headers or {})
        payload = {k: v for k, v in payload.items() if v is not DROP}
        header = {k: v for k, v in header.items() if v is not DROP}
        return jwt.encode(
            payload, key if key is not None else self.private_key, algorithm=alg or self.alg, headers=header
        )


@dataclass
class JwksServer:
    """Serves GET /jwks/{name}.json; the test may add, rotate or remove keys while it runs."""

    keysets: dict[str, list[SigningKey]] = field(default_factory=dict)
    fetches: Counter[str] = field(default_factory=Counter)
    base_url: str = ""

    def add_key(self, name: str, alg: str = "ES384", kid: str | None = None) -> SigningKey:
        key = SigningKey.generate(alg, kid)
        self.keysets.setdefault(name, []).append(key)
        return key

    def url(self, name: str) -> str:
        assert self.base_url, "serve() first"
        return f"{self.base_url}/jwks/{name}.json"

    def jwks(self, name: str) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self.keysets.get(name, [])]}

    def app(self) -> Starlette:
        async def serve(request: Request) -> Response:
            name = request.path_params["name"]
            self.fetches[name] += 1
            if name not in self.keysets:
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse(self.jwks(name))

        return Starlette(routes=[Route("/jwks/{name}.json", serve)])

    @contextlib.contextmanager
    def serve(self, port: int | None = None) -> Iterator[str]:
        with serve_asgi(self.app(), port=port) as base:
            self.base_url = base
            yield base


def issuer_settings(iss: str, jwks_url: str | None = None, **overrides: Any) -> Any:
    """Settings with JWT on and one issuer whose keys are at `jwks_url` (also its allowed jku)."""
    from cds.settings import IssuerConfig, Settings

    issuer = overrides.pop("issuer", None) or IssuerConfig(
        jwks_url=jwks_url, allowed_jku=[jwks_url] if jwks_url else []
    )
    base = {"auth": "jwt", "jwt_issuers": {iss: issuer}, "redis_url": None, "database_url": None}
    base.update(overrides)
    return Settings(_env_file=None, **base)
