"""The FHIR server allowlist (SSRF guard): parsed-URL prefix matching, https, per-issuer lists."""

from __future__ import annotations

import pytest

from cds.auth import Claims
from cds.errors import FhirServerNotAllowed
from cds.outbound import check_fhir_server, fhir_server_allowed, is_loopback_host, validate_allowlist
from cds.settings import IssuerConfig, Settings

ISS = "https://ehr.example.org"
ALLOW = ["https://ehr.example.org/fhir", "https://fhir.example.net:8443/r4/", "http://127.0.0.1:9999/fhir"]


def settings(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)


ALLOWED = [
    "https://ehr.example.org/fhir",
    "https://ehr.example.org/fhir/",
    "https://ehr.example.org/fhir/R4",
    "https://EHR.example.org/fhir",
    "https://ehr.example.org:443/fhir",
    "https://ehr.example.org./fhir",
    "https://fhir.example.net:8443/r4",
    "http://127.0.0.1:9999/fhir/tenant/a",
]

REFUSED = [
    "https://ehr.example.org.evil.com/fhir",
    "https://ehr.example.org@evil.com/fhir",
    "https://user:pw@ehr.example.org/fhir",
    "https://evil.com#@ehr.example.org/fhir",
    "https://evil.com\\@ehr.example.org/fhir",
    "https://ehr.example.org/fhir2",
    "https://ehr.example.org/fhi",
    "https://ehr.example.org/",
    "https://ehr.example.org/fhir/../admin",
    "https://ehr.example.org/fhir/%2e%2e/admin",
    "https://ehr.example.org/fhir%2f..%2fadmin",
    "https://ehr.example.org/fhir?x=1",
    "https://ehr.example.org/fhir#frag",
    "https://ehr.example.org:8443/fhir",
    "http://ehr.example.org/fhir",
    "https://fhir.example.net/r4",
    "http://127.0.0.1:9998/fhir",
    "http://127.0.0.2:9999/fhir",
    "ftp://ehr.example.org/fhir",
    "file:///etc/passwd",
    "//ehr.example.org/fhir",
    "https:///fhir",
    "https://ehr.example.org/fhir\n",
    " https://ehr.example.org/fhir",
    "https://ehr.example.org:99999/fhir",
    "https://169.254.169.254/latest/meta-data",
]


@pytest.mark.parametrize("url", ALLOWED)
def test_allowlisted_urls_pass(url: str) -> None:
    check_fhir_server(url, settings(auth="off", fhir_server_allowlist=ALLOW), None)


@pytest.mark.parametrize("url", REFUSED)
def test_lookalikes_and_tricks_are_refused(url: str) -> None:
    with pytest.raises(FhirServerNotAllowed):
        check_fhir_server(url, settings(auth="off", fhir_server_allowlist=ALLOW), None)


@pytest.mark.parametrize(
    "url, ok",
    [
        ("http://127.0.0.1:8081/fhir", True),
        ("http://localhost:8081/fhir", True),
        ("http://[::1]:8081/fhir", True),
        ("https://127.0.0.1/fhir", True),
        ("http://10.0.0.5/fhir", False),
        ("https://ehr.example.org/fhir", False),
        ("http://127.0.0.1.nip.io/fhir", False),
        ("http://0.0.0.0:8081/fhir", False),
    ],
)
def test_auth_off_without_allowlist_means_loopback_only(url: str, ok: bool) -> None:
    reason = fhir_server_allowed(url, settings(auth="off"), None)
    assert (reason is None) == ok, reason


def jwt_settings(global_list: list[str], issuer_list: list[str]) -> Settings:
    return settings(
        auth="jwt",
        fhir_server_allowlist=global_list,
        jwt_issuers={ISS: IssuerConfig(jwks_url="https://ehr.example.org/jwks", fhir_servers=issuer_list)},
    )


CLAIMS = Claims(iss=ISS, jti="j")


@pytest.mark.parametrize(
    "global_list, issuer_list, url, ok",
    [
        ([], ["https://ehr.example.org/fhir"], "https://ehr.example.org/fhir/R4", True),
        ([], ["https://ehr.example.org/fhir"], "https://other.example.org/fhir", False),
        (["https://ehr.example.org/"], [], "https://ehr.example.org/fhir", True),
        # both set: the intersection
        (
            ["https://ehr.example.org/"],
            ["https://ehr.example.org/fhir"],
            "https://ehr.example.org/fhir",
            True,
        ),
        (
            ["https://ehr.example.org/"],
            ["https://ehr.example.org/fhir"],
            "https://ehr.example.org/other",
            False,
        ),
        (["https://a.example.org/"], ["https://ehr.example.org/fhir"], "https://ehr.example.org/fhir", False),
        # neither set: nothing, not even loopback
        ([], [], "https://ehr.example.org/fhir", False),
        ([], [], "http://127.0.0.1:8081/fhir", False),
        # loopback http only when explicitly listed
        ([], ["http://127.0.0.1:8081/fhir"], "http://127.0.0.1:8081/fhir", True),
    ],
)
def test_jwt_on_uses_the_issuers_list_and_the_global_list(
    global_list: list[str], issuer_list: list[str], url: str, ok: bool
) -> None:
    reason = fhir_server_allowed(url, jwt_settings(global_list, issuer_list), CLAIMS)
    assert (reason is None) == ok, reason


def test_jwt_on_without_claims_is_refused() -> None:
    with pytest.raises(FhirServerNotAllowed):
        check_fhir_server(
            "https://ehr.example.org/fhir", jwt_settings([], ["https://ehr.example.org/fhir"]), None
        )


def test_another_issuers_servers_are_not_ours() -> None:
    s = settings(
        auth="jwt",
        jwt_issuers={
            ISS: IssuerConfig(jwks_url="https://k.example/a", fhir_servers=["https://ehr.example.org/fhir"]),
            "https://b.example": IssuerConfig(
                jwks_url="https://k.example/b", fhir_servers=["https://b.example/fhir"]
            ),
        },
    )
    assert fhir_server_allowed("https://b.example/fhir", s, CLAIMS) is not None
    assert fhir_server_allowed("https://b.example/fhir", s, Claims(iss="https://b.example", jti="j")) is None


def test_refusal_is_a_412_operation_outcome() -> None:
    from cds.errors import to_operation_outcome

    with pytest.raises(FhirServerNotAllowed) as exc:
        check_fhir_server("https://evil.example/fhir", settings(auth="off"), None)
    assert exc.value.status_code == 412
    assert to_operation_outcome(exc.value)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "prefix", ["http://ehr.example.org/fhir", "not a url", "https://u:p@ehr.example.org/"]
)
def test_unusable_allowlist_entries_stop_startup(prefix: str) -> None:
    with pytest.raises(RuntimeError):
        validate_allowlist(settings(auth="off", fhir_server_allowlist=[prefix]))


def test_an_overlong_url_is_malformed() -> None:
    """No FHIR base URL is 3,000 characters long: refused before it is parsed."""
    huge = "https://ehr.example.org/fhir/" + "a" * 3000
    s = settings(auth="off", fhir_server_allowlist=ALLOW)
    assert fhir_server_allowed(huge, s) == "malformed fhirServer URL"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("169.254.169.254", False),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("localhost.evil.com", False),
        ("", False),
        (None, False),
    ],
)
def test_loopback_hosts(host: str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
