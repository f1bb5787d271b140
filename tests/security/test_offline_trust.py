"""Issue 18 defect 12: offline trust. An EHR that always sends `jku` (the CDS Hooks Sandbox does), with
its key pinned inline and its jku allowlisted, is verified with no network: the jku host may be down or
unreachable (air-gapped hospitals), and is not even asked."""

from __future__ import annotations

from pathlib import Path

import httpx

from cds.settings import IssuerConfig
from tests.support.jwks import JwksServer, SigningKey, issuer_settings
from tests.support.servers import free_port, serve_service

ISS = "https://sandbox.cds-hooks.org"


def _discover(base: str, key: SigningKey, jku: str, public: str) -> httpx.Response:
    token = key.token(iss=ISS, aud=public + "/cds-services", jku=jku)
    return httpx.get(base + "/cds-services", headers={"Authorization": f"Bearer {token}"})


def test_pinned_key_verifies_when_the_jku_host_is_unreachable(tmp_path: Path) -> None:
    key = SigningKey.generate("ES384")
    jku = f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"  # nothing listens there
    public = "https://cds.example.org"
    settings = issuer_settings(
        ISS,
        public_base_url=public,
        state_dir=tmp_path,
        issuer=IssuerConfig(jwks={"keys": [key.public_jwk]}, allowed_jku=[jku]),
    )
    with serve_service(settings) as base:
        assert _discover(base, key, jku, public).status_code == 200


def test_pinned_key_is_used_without_asking_the_jku(tmp_path: Path) -> None:
    keys = JwksServer()
    key = keys.add_key("sandbox", "ES384")
    public = "https://cds.example.org"
    with keys.serve():
        jku = keys.url("sandbox")
        settings = issuer_settings(
            ISS,
            public_base_url=public,
            state_dir=tmp_path,
            issuer=IssuerConfig(jwks={"keys": [key.public_jwk]}, allowed_jku=[jku]),
        )
        with serve_service(settings) as base:
            assert _discover(base, key, jku, public).status_code == 200
            assert _discover(base, key, jku, public).status_code == 200
        assert keys.fetches["sandbox"] == 0


def test_unpinned_kid_still_comes_from_the_jku_and_others_are_refused(tmp_path: Path) -> None:
    keys = JwksServer()
    pinned = SigningKey.generate("ES384")
    rotated = keys.add_key("sandbox", "ES384")  # only at the jku
    stranger = SigningKey.generate("ES384")  # nowhere
    public = "https://cds.example.org"
    with keys.serve():
        jku = keys.url("sandbox")
        settings = issuer_settings(
            ISS,
            public_base_url=public,
            state_dir=tmp_path,
            issuer=IssuerConfig(jwks={"keys": [pinned.public_jwk]}, allowed_jku=[jku]),
        )
        with serve_service(settings) as base:
            assert _discover(base, rotated, jku, public).status_code == 200
            assert _discover(base, stranger, jku, public).status_code == 401
            # a jku that is not allowlisted is refused even when the kid is pinned
            assert _discover(base, pinned, "https://evil.example/jwks.json", public).status_code == 401
