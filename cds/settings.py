"""Settings: the only place the environment is read. Every variable has the prefix CDS_."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IssuerConfig(BaseModel):
    """One trusted EHR (JWT `iss`): where its keys are and what it may name."""

    jwks_url: str | None = None  # fetched and cached; refetched once on an unknown kid
    jwks_file: Path | None = None  # static JWKS exchanged out of band
    jwks: dict[str, object] | None = None  # inline static JWKS
    allowed_jku: list[str] = Field(default_factory=list)  # jku header values accepted for this iss
    fhir_servers: list[str] = Field(default_factory=list)  # URL prefixes this EHR may send as fhirServer
    tenants: list[str] = Field(default_factory=list)  # when set, the `tenant` claim must be one of these


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CDS_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    # clinical
    plex_target_ug_per_ml: float = Field(1.0, gt=0, le=100)
    # the natalizumab assay's lower limit: a "not detected" result without a referenceRange is read as
    # "< this"; unset = such a result is named as unusable (never taken as zero)
    natalizumab_assay_limit_ug_per_ml: float | None = Field(None, gt=0, le=100)

    # serving
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = Field(1, ge=1, le=64)
    public_base_url: str = "http://127.0.0.1:8080"  # JWT aud and absolute links are built from it
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 5 * 1024 * 1024
    demo: bool = False  # serve /demo and the packaged demo patients
    api_docs: bool = False  # serve /docs and /openapi.json (off: they describe the service to anyone)
    max_header_bytes: int = Field(64 * 1024, ge=4096)  # request line + headers; larger heads are refused
    header_timeout_s: float = Field(10.0, gt=0)  # a connection must send its whole head within this
    body_timeout_s: float = Field(30.0, gt=0)  # and its whole body within this after the head
    max_connections: int | None = Field(None, ge=1)  # per worker; over it new requests get 503

    # trust
    auth: Literal["jwt", "off"] = "jwt"
    jwt_issuers: dict[str, IssuerConfig] = Field(default_factory=dict)
    jwt_clock_skew_s: int = Field(60, ge=0, le=600)
    jwt_max_lifetime_s: int = Field(3600, ge=1)
    fhir_server_allowlist: list[str] = Field(default_factory=list)  # URL prefixes
    allow_open_fhir: bool = False  # dev only: call fhirServer without fhirAuthorization

    # FHIR reads
    fhir_timeout_s: float = Field(1.0, gt=0)
    fhir_deadline_s: float = Field(1.8, gt=0)
    # 10: the nine first-page searches of a hook (cds.fhir_io.prefetch_templates) go out together, so a
    # no-prefetch hook waits one round trip, not two (bench/guard.md)
    fhir_max_concurrency: int = Field(10, ge=1)
    fhir_max_pages: int = Field(5, ge=1)
    fhir_max_response_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    strict_fhir: bool = False  # validate every resource with fhir.resources R4B as well
    cache_ttl_s: int = Field(60, ge=0)
    cache_max_entries: int = Field(4096, ge=1)
    cache_max_mb: int = Field(16, ge=1)  # in-process FHIR read cache, estimated resident MB per worker
    # terminology a site may extend: "system|code" strings (codes.md lists the defaults)
    plex_codes: list[str] = Field(default_factory=list)
    natalizumab_level_codes: list[str] = Field(default_factory=list)

    # state
    state_dir: Path = Path(".state")
    database_url: str | None = None  # postgresql://… ; SQLite under state_dir otherwise
    redis_url: str | None = None  # jti replay store, FHIR read cache, chart links; in-process otherwise
    chart_max_entries: int = Field(10_000, ge=1)  # live chart links per worker without Redis (~2 KB each)
    redis_key_prefix: str = "cds:"  # every Redis key starts with it (several services on one Redis)
    # PostgreSQL: the longest a call waits for a pooled connection, a new connection or one statement
    # before the database counts as unreachable (feedback answers 503; audit rows wait for a retry)
    database_timeout_s: float = Field(2.0, gt=0, le=30)
    audit_queue_max: int = Field(10_000, ge=100)  # audit rows waiting for the database, per worker
    # the store's share of shutdown (the last audit rows): below a pod's 30 s terminationGracePeriod
    shutdown_timeout_s: float = Field(10.0, gt=0, le=25)
