"""Query API settings, read from `AUDIT_QUERY_*` and validated at start-up."""

from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, PostgresDsn, SecretStr, StringConstraints, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from audit_query.keystore.wrapping import Kek, Keks
from audit_schemas.kafka_security import KafkaSecurity
from audit_schemas.signing import EventSigner
from audit_schemas.topics import AUDIT_TOPIC, EXECUTION_LOG_TOPIC

_DEV_SECRET = "development-only-cursor-secret"
_READ_ONLY_TARGETS = frozenset({"standby", "prefer-standby", "read-only"})
_UNSAFE_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})
SchemaName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]


class AdminSettings(BaseSettings):
    """What `audit-query tokens` needs: the owner's DSN, the control schema, and Kafka with the API's signing key
    for the audit records of token changes. Nothing of the HTTP server (cursor secret, OIDC, limits)."""

    model_config = SettingsConfigDict(env_prefix="AUDIT_QUERY_", env_nested_delimiter="__", frozen=True, extra="ignore")

    environment: Literal["development", "test", "production"] = "production"
    """Only `development` may run with the built-in cursor key; everything else needs real secrets."""
    db_schema: SchemaName = "audit"
    """The read model's schema."""
    control_schema: SchemaName = "audit_control"
    """API tokens and sessions: state that a rebuild of the read model never touches."""
    admin_database_url: PostgresDsn | None = None
    """Owner DSN for `audit-query tokens` (the service's own role may only read tokens)."""
    bootstrap_servers: str = "127.0.0.1:19092"
    kafka: KafkaSecurity = KafkaSecurity()
    """Transport security and the API's principal (`AUDIT_QUERY_KAFKA__SECURITY_PROTOCOL=SASL_SSL`, ...)."""
    signing_key: SecretStr | None = None
    """The API's own Ed25519 key (source `audit-query`): signs the audit records of its own actions."""
    signing_key_file: Path | None = None
    topics: tuple[str, ...] = (AUDIT_TOPIC, EXECUTION_LOG_TOPIC)
    self_audit_tenant: str = "platform"
    """Tenant under which the API records its own actions (token changes, exports)."""
    keystore_url: PostgresDsn | None = None
    """The key store (a schema and role of its own, apart from the read model): when set, producers get their
    subjects' keys at /v1/keys, readers see sealed fields opened, and `audit-query subjects` erases."""
    keystore_schema: SchemaName = "audit_keys"
    keystore_kek: SecretStr | None = None
    """The key-encryption key (base64 of 32 bytes) that wraps every key in the store; never stored there."""
    keystore_kek_file: Path | None = None
    keystore_previous_kek_file: Path | None = None
    """Earlier KEKs, one per line: they still unwrap until `audit-query keystore rewrap` has moved every key."""
    key_ttl_s: Annotated[float, Field(gt=0, le=3600)] = 300.0
    """How long a producer may seal with a granted key: with the producer's own cache bound, the erasure delay."""

    @model_validator(mode="after")
    def _key_store_has_its_kek(self) -> Self:
        if self.keystore_url is not None and self.keystore_kek is None and self.keystore_kek_file is None:
            raise ValueError(
                "AUDIT_QUERY_KEYSTORE_URL is set: the key-encryption key must be too (AUDIT_QUERY_KEYSTORE_KEK or "
                "_KEYSTORE_KEK_FILE)"
            )
        return self

    def keks(self) -> Keks | None:
        """The configured KEKs (the current one first), or None without a key store."""
        current = Kek.configured(self.keystore_kek, self.keystore_kek_file)
        if current is None:
            return None
        previous = []
        if self.keystore_previous_kek_file is not None:
            lines = self.keystore_previous_kek_file.read_text().split()
            previous = [Kek.parse(line) for line in lines if line.strip()]
        return Keks(current, *previous)

    @model_validator(mode="after")
    def _signed_when_authenticated(self) -> Self:
        if self.kafka.sasl and self.signing_key is None and self.signing_key_file is None:
            raise ValueError(
                "Kafka SASL is on, so the API's own audit records must be signed: set AUDIT_QUERY_SIGNING_KEY "
                "or _SIGNING_KEY_FILE"
            )
        return self

    def event_signer(self) -> EventSigner | None:
        """The signer of the API's own audit records, or None (they go unsigned; refused under SASL)."""
        return EventSigner.configured(self.signing_key, self.signing_key_file)


class Settings(AdminSettings):
    """Database, Kafka (for lag), cursor signing and paging limits."""

    model_config = SettingsConfigDict(env_prefix="AUDIT_QUERY_", env_nested_delimiter="__", frozen=True, extra="forbid")

    database_url: PostgresDsn = PostgresDsn("postgresql://audit_query@127.0.0.1:15432/audit")
    """The primary (`target_session_attrs=read-write` with several hosts): the service's own writes (sessions,
    token use), tokens, and every read unless `read_database_url` is set."""
    read_database_url: PostgresDsn | None = None
    """Where reads of the audit log go, e.g. the same hosts with `target_session_attrs=prefer-standby`; readiness
    then reports the standby's replay lag."""
    max_replay_lag_s: Annotated[float, Field(gt=0)] = 30.0
    """Readiness reports `degraded` while the server answering reads is further behind the primary than this."""
    failover_check_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    """How often each pool's DSN is resolved afresh; a pool is recycled when it resolves to another server."""
    projector_group: str = "audit-projector"
    cursor_secret: SecretStr = SecretStr(_DEV_SECRET)
    """Signs pagination cursors so a client cannot forge or replay one against another query."""
    unknown_after_s: Annotated[float, Field(gt=0)] = 900.0
    """An action with no outcome after this long shows as `unknown` rather than `in_progress`."""
    max_ready_lag: Annotated[int, Field(ge=0)] | None = None
    """When set, readiness reports `degraded` while the projector is further behind than this many records."""
    default_limit: Annotated[int, Field(ge=1, le=1000)] = 50
    max_limit: Annotated[int, Field(ge=1, le=5000)] = 500
    max_logs: Annotated[int, Field(ge=1, le=100_000)] = 5000
    trace_page: Annotated[int, Field(ge=1, le=100_000)] = 200
    """Log lines in a page of the trace view unless the caller asks for more (up to `max_logs`)."""
    live_streams_per_credential: Annotated[int, Field(ge=1, le=1000)] = 8
    """Open live trace streams one credential (token, JWT subject, session) may hold per worker; more: 429."""
    live_grace_s: Annotated[float, Field(ge=0, le=60)] = 5.0
    """How long a live stream waits for a trace with nothing recorded yet before answering 404."""
    session_ttl_s: Annotated[float, Field(gt=60, le=7 * 24 * 3600)] = 8 * 3600.0
    """How long a console session lasts after sign-in."""
    cookie_secure: bool | None = None
    """Mark the session cookie `Secure`; by default when the request came over TLS."""
    public_metrics: bool = True
    """Serve /metrics without a credential (scrapers usually sit inside the network). Off: an audit:admin
    credential, or the metrics token, is needed."""
    metrics_token: SecretStr | None = None
    """A bearer token for /metrics alone (Prometheus' `authorization` setting); when set, /metrics needs it."""
    metrics_token_file: Path | None = None
    trusted_proxies: tuple[str, ...] = ()
    """Addresses whose X-Forwarded-* headers are believed; none by default."""
    oidc_issuer: str | None = None
    """Identity provider whose access tokens (JWTs) are accepted; with `oidc_audience` and `oidc_jwks_url`."""
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    """Accepted JWS algorithms; `none` and HMAC ones are refused (RFC 8725: no algorithm confusion)."""
    oidc_scopes_claim: str = "scope"
    """Claim holding the caller's scopes (space-separated string or list); only audit:* scopes count."""
    oidc_tenants_claim: str = "audit_tenants"
    """Claim holding the tenants the caller may see (list, or "*" for every tenant)."""
    jwks_cache_s: Annotated[float, Field(gt=0)] = 300.0
    log_name: str = "audit-trail"
    """The projector's log name: checkpoint origins are `<log name>/<topic>/<partition>`."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """INFO logs one line per authenticated request (who read what); WARNING keeps only problems."""

    @model_validator(mode="after")
    def _oidc_complete_and_safe(self) -> Self:
        oidc = (self.oidc_issuer, self.oidc_audience, self.oidc_jwks_url)
        if any(oidc) and not all(oidc):
            raise ValueError("OIDC needs AUDIT_QUERY_OIDC_ISSUER, _AUDIENCE and _JWKS_URL together")
        unsafe = _UNSAFE_ALGORITHMS & set(self.oidc_algorithms)
        if unsafe or not self.oidc_algorithms:
            raise ValueError(f"AUDIT_QUERY_OIDC_ALGORITHMS must name asymmetric algorithms only, not {sorted(unsafe)}")
        return self

    @model_validator(mode="after")
    def _writes_reach_the_primary(self) -> Self:
        attrs = parse_qs(urlsplit(str(self.database_url)).query).get("target_session_attrs", ["any"])[-1]
        if attrs in _READ_ONLY_TARGETS:
            raise ValueError(
                f"AUDIT_QUERY_DATABASE_URL has target_session_attrs={attrs}, but the service writes through it "
                "(sessions, token use): point it at the primary and put the standby in AUDIT_QUERY_READ_DATABASE_URL"
            )
        return self

    def read_dsn(self) -> str | None:
        """The DSN of the read pool, or None to read through the primary's pool."""
        return None if self.read_database_url is None else str(self.read_database_url)

    def scrape_token(self) -> str | None:
        """The /metrics bearer token, from the setting or its file (None: none configured)."""
        if self.metrics_token is not None:
            return self.metrics_token.get_secret_value().strip() or None
        if self.metrics_token_file is not None:
            return self.metrics_token_file.read_text().strip() or None
        return None

    @model_validator(mode="after")
    def _real_secret_outside_development(self) -> Self:
        secret = self.cursor_secret.get_secret_value()
        if self.environment != "development" and (secret == _DEV_SECRET or len(secret) < 32):
            raise ValueError(
                "AUDIT_QUERY_CURSOR_SECRET must be set to a random secret of 32+ characters "
                "(only AUDIT_QUERY_ENVIRONMENT=development may use the built-in key)"
            )
        return self
