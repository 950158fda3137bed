"""Producer settings, read from `AUDIT_PRODUCER_*`."""

import os
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from audit_producer.redaction import DEFAULT_KEYS
from audit_schemas.kafka_security import KafkaSecurity
from audit_schemas.signing import EventSigner
from audit_schemas.topics import AUDIT_TOPIC, EXECUTION_LOG_TOPIC


def _default_spool_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "audit-producer"


class Settings(BaseSettings):
    """Where events go, how long a publish may take, and what happens when Kafka does not answer."""

    model_config = SettingsConfigDict(
        env_prefix="AUDIT_PRODUCER_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    bootstrap_servers: str = "127.0.0.1:19092"
    kafka: KafkaSecurity = KafkaSecurity()
    """Transport security and this service's principal (`AUDIT_PRODUCER_KAFKA__SECURITY_PROTOCOL=SASL_SSL`, ...)."""
    audit_topic: str = AUDIT_TOPIC
    execution_log_topic: str = EXECUTION_LOG_TOPIC
    publish_timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    """Deadline for one audit event's acknowledgement (aiokafka alone would wait up to 40 s)."""
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = 0
    """How long the client waits to fill a batch. 0: audit events are on the caller's path (the body waits for the
    start's acknowledgement); execution-log lines still batch while a request is in flight."""
    log_queue_size: Annotated[int, Field(ge=1)] = 10_000
    """Execution-log lines waiting to be shipped; beyond this, lines are dropped and counted."""
    failure_mode: Literal["closed", "open"] = "closed"
    """closed: no body runs unless its start event is acknowledged. open: when Kafka does not answer, the start
    event is spooled and the body runs (availability first); spooled events are re-sent in order."""
    spool_enabled: bool = True
    """Keep events Kafka did not acknowledge (outcomes, aborted starts; in open mode also starts) on disk."""
    spool_dir: Path = Field(default_factory=_default_spool_dir)
    """Durable directory for the spool (a volume in containers); each service uses `<spool_dir>/<source>`."""
    spool_max_records: Annotated[int, Field(ge=1)] = 100_000
    spool_max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    max_value_bytes: Annotated[int, Field(ge=64, le=512 * 1024)] = 64 * 1024
    """Largest encoded change value; a larger one is recorded as a marker saying so."""
    max_event_bytes: Annotated[int, Field(ge=4096, le=16 * 1024 * 1024)] = 900_000
    """Largest encoded audit event (below the broker's 1 MiB default); change values give way past it."""
    signing_key: SecretStr | None = None
    """This service's Ed25519 key (`PRIVATE+KEY+<name>+<hash>+<base64>`): every record it publishes is signed."""
    signing_key_file: Path | None = None
    redact_keys: tuple[str, ...] = DEFAULT_KEYS
    """Values under keys containing any of these (case-insensitive, `-` = `_`) are never sent: change sets, log
    fields and request context; credentials inside text (bearer tokens, URL passwords, `secret=…`) too."""
    redact_hmac_key: SecretStr | None = None
    """When set, a redacted value becomes an HMAC-SHA256 of it under this key, so a known value can be matched."""
    key_service_url: str | None = None
    """The key service (the query API's base URL): when set, personal fields are sealed under per-subject keys
    before they leave the process (schemas/README.md, "Personal data"); requests are signed with `signing_key`."""
    key_cache_s: Annotated[float, Field(gt=0, le=3600)] = 300.0
    """How long a subject's key seals from the cache: the erasure delay (a key destroyed at the service may still
    seal this process's new events for this long; never longer than the service's own bound)."""
    key_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    """Deadline of one key request; when it passes, the action fails before its body (KeyServiceError)."""
    key_escrow_public_key: str | None = None
    """The key service's escrow key (`GET /v1/subject-keys/escrow-key`). In fail-open mode, when the key service
    does not answer, the action's personal fields are sealed to it and its records wait in the spool (never in
    clear) until the service turns them into sealed fields; without it, such an action fails before its body."""
    personal_fields: tuple[str, ...] = ("email", "phone")
    """Change-set keys and log fields whose values are personal (case-insensitive, `-` = `_`): sealed."""
    personal_models: tuple[str, ...] = ("user",)
    """Entity models whose ids name a person: such an entity is named by its pseudonym, its id sealed."""
    stop_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """How long `stop()` may take to ship queued logs and drain the spool before leaving the rest on disk."""

    @model_validator(mode="after")
    def _signed_when_authenticated(self) -> Self:
        if self.kafka.sasl and self.signing_key is None and self.signing_key_file is None:
            raise ValueError(
                "Kafka SASL is on, so every event must be signed: set AUDIT_PRODUCER_SIGNING_KEY or _SIGNING_KEY_FILE "
                "(the projector dead-letters unsigned events whenever SASL is on)"
            )
        return self

    @model_validator(mode="after")
    def _key_requests_are_signed(self) -> Self:
        if self.key_service_url is not None and self.signing_key is None and self.signing_key_file is None:
            raise ValueError(
                "AUDIT_PRODUCER_KEY_SERVICE_URL is set, and key requests are signed with the service's key: set "
                "AUDIT_PRODUCER_SIGNING_KEY or _SIGNING_KEY_FILE"
            )
        return self


def event_signer(settings: Settings) -> EventSigner | None:
    """The service's event signer from its settings, or None when it does not sign."""
    return EventSigner.configured(settings.signing_key, settings.signing_key_file)
