"""Projector settings, read from `AUDIT_PROJECTOR_*` and validated at start-up."""

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PostgresDsn,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from audit_schemas.checkpoint import CheckpointError
from audit_schemas.cosignature import WitnessKey
from audit_schemas.kafka_security import KafkaSecurity
from audit_schemas.signing import EventSigner
from audit_schemas.topics import (
    AUDIT_TOPIC,
    CHECKPOINT_TOPIC,
    DEAD_LETTER_TOPIC,
    DEFAULT_PARTITIONS,
    EXECUTION_LOG_TOPIC,
)

SchemaName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]


class WitnessConfig(BaseModel):
    """A witness the log asks to cosign (C2SP tlog-witness): its verifier key and its submission URL prefix."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    """`<name>+<hash>+<base64(0x04 ‖ Ed25519 key)>`: cosignatures by other keys are ignored."""
    url: AnyHttpUrl
    """The submission prefix; the log POSTs to `<url>/add-checkpoint`."""

    @field_validator("key")
    @classmethod
    def _witness_key(cls, value: str) -> str:
        try:
            WitnessKey.parse(value)
        except CheckpointError as e:
            raise ValueError(str(e)) from e
        return value.strip()

    @property
    def verifier(self) -> WitnessKey:
        return WitnessKey.parse(self.key)

    @property
    def name(self) -> str:
        return self.verifier.name

    @property
    def endpoint(self) -> str:
        return str(self.url).rstrip("/") + "/add-checkpoint"


class Settings(BaseSettings):
    """Where to read from, where to write to, and how big a batch is."""

    model_config = SettingsConfigDict(
        env_prefix="AUDIT_PROJECTOR_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    environment: Literal["development", "production"] = "production"
    """Outside `development`, topics must be replicated (3 replicas, min.insync.replicas 2, no unclean election):
    the projector refuses to start on topics one lost broker could take acknowledged records with."""
    bootstrap_servers: str = "127.0.0.1:19092"
    kafka: KafkaSecurity = KafkaSecurity()
    """Transport security and principal (`AUDIT_PROJECTOR_KAFKA__SECURITY_PROTOCOL=SASL_SSL`, ...); replay and
    redrive run with their own principals by setting these for their command."""
    database_url: PostgresDsn = PostgresDsn("postgresql://audit_projector@127.0.0.1:15432/audit")
    migrations_database_url: PostgresDsn | None = None
    """Owner role's DSN; when set, migrations run at start (the projector's own role cannot run them)."""
    db_schema: SchemaName = "audit"
    control_schema: SchemaName = "audit_control"
    """Tokens, sessions and keys: state a rebuild of the read model never touches; migrated beside it."""
    group_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] = "audit-projector"
    kafka_group_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    """The Kafka consumer group to join when it must differ from `group_id`, under which offsets are stored: a
    replay stores its offsets under the live group's name (so that after a swap the live projectors find their
    position) while joining a group of its own (never taking partitions from the live projectors)."""
    audit_topic: str = AUDIT_TOPIC
    execution_log_topic: str = EXECUTION_LOG_TOPIC
    dead_letter_topic: str = DEAD_LETTER_TOPIC
    partitions: Annotated[int, Field(ge=1, le=1000)] = DEFAULT_PARTITIONS
    batch_max_records: Annotated[int, Field(ge=1, le=100_000)] = 2000
    poll_timeout_ms: Annotated[int, Field(ge=10, le=60_000)] = 500
    session_timeout_ms: Annotated[int, Field(ge=1000)] = 10_000
    heartbeat_interval_ms: Annotated[int, Field(ge=100)] = 1000
    publish_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    months_ahead: Annotated[int, Field(ge=1, le=36)] = 3
    stall_after_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """Readiness fails when the broker has not answered, or lag has not shrunk, for this long."""
    probe_interval_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    """How often each pipeline asks the broker for end offsets (lag) and re-checks blocked partitions."""
    shutdown_timeout_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    statement_timeout_s: Annotated[float, Field(ge=5, le=3600)] = 30.0
    """How long one statement of the pipeline may go unanswered before its connection is given up (a frozen
    server never answers or closes it); above PostgreSQL's 15 s lock timeout, so only a silent server hits it."""
    """On SIGTERM, how long the batch in flight may take to commit before it is rolled back."""
    redrive_key: SecretStr | None = None
    """`audit-projector redrive` signs what it re-publishes with this key (its own identity, e.g. audit-redrive),
    never in the original service's name; the original signature travels on as evidence."""
    redrive_key_file: Path | None = None
    require_signatures: bool | None = None
    """Dead-letter unsigned events; signed ones are always checked against the key registry. Unset: on exactly
    when Kafka SASL is on; turning it off under SASL is refused at start."""
    publish_dead_letters: bool = True
    """Publish refused records to the dead-letter topic (a replay does not: the live projectors already did)."""
    merkle_enabled: bool = True
    """Keep the RFC 9162 Merkle tree of every projected partition (leaves, nodes, frontier) with each batch."""
    log_name: Annotated[str, StringConstraints(pattern=r"^[^\s+]{1,200}$")] = "audit-trail"
    """Checkpoint origins are `<log name>/<topic>/<partition>`; the signing key carries this name."""
    checkpoint_key: SecretStr | None = None
    """The Ed25519 signer key, `PRIVATE+KEY+<name>+<hash>+<base64>` (the note format); read from here or from
    `checkpoint_key_file`, never from the database. Without one, no checkpoints are signed."""
    checkpoint_key_file: Path | None = None
    checkpoint_topic: str = CHECKPOINT_TOPIC
    checkpoint_every_leaves: Annotated[int, Field(ge=1)] = 1000
    checkpoint_every_s: Annotated[float, Field(gt=0)] = 60.0
    witnesses: list[WitnessConfig] = []
    """JSON: `[{"key": "<witness verifier key>", "url": "http://witness:7380"}, ...]`. Each new checkpoint is sent
    to each (off the projection path); a witness that is down never stops projection."""
    witness_quorum: Annotated[int, Field(ge=0, le=32)] | None = None
    """How many witnesses must cosign the newest checkpoint of every origin (k of n; default 1 with witnesses)."""
    witness_interval_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    """How often new checkpoints are sent to the witnesses (each witness gets the newest one of each origin)."""
    witness_timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    witness_grace_s: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    """Readiness reports (and the metric shows) an origin whose newest checkpoint lacks the quorum this long."""
    rollup_compaction_interval_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    """How often the rollups of closed hours and days are folded into the coarser tables the dashboard reads
    (0: never; `audit-projector compact-rollups` does it on demand). One projector of a fleet compacts at a time."""
    health_host: str = "127.0.0.1"
    health_port: Annotated[int, Field(ge=0, le=65535)] = 0
    """Port of /healthz and /readyz; 0 turns the health server off."""

    @model_validator(mode="after")
    def _signatures_with_sasl(self) -> Self:
        if self.kafka.sasl and self.require_signatures is False:
            raise ValueError(
                "AUDIT_PROJECTOR_REQUIRE_SIGNATURES=false is refused while Kafka SASL is on: the broker cannot tell "
                "the projector who wrote a record, so only a signature binds an event to its source and tenant"
            )
        return self

    @model_validator(mode="after")
    def _quorum_within_witnesses(self) -> Self:
        if self.witness_quorum is not None and self.witness_quorum > len(self.witnesses):
            raise ValueError(
                f"AUDIT_PROJECTOR_WITNESS_QUORUM={self.witness_quorum} but only {len(self.witnesses)} witnesses are "
                "configured: no checkpoint could ever meet it"
            )
        names = [w.name for w in self.witnesses]
        if len(set(names)) != len(names):
            raise ValueError("AUDIT_PROJECTOR_WITNESSES names a witness twice")
        return self

    @property
    def quorum(self) -> int:
        """Cosignatures each newest checkpoint needs: the setting, or 1 when witnesses are configured."""
        if self.witness_quorum is not None:
            return self.witness_quorum
        return min(1, len(self.witnesses))

    @property
    def signatures_required(self) -> bool:
        """Whether unsigned events are dead-lettered (always when SASL is on)."""
        return self.kafka.sasl if self.require_signatures is None else self.require_signatures

    @property
    def topics(self) -> tuple[str, str]:
        """The topics projected into the read model."""
        return (self.audit_topic, self.execution_log_topic)

    def signer_key(self) -> str | None:
        """The checkpoint signer key, from the setting or the file (None: checkpoints are not signed)."""
        if self.checkpoint_key is not None:
            return self.checkpoint_key.get_secret_value().strip()
        if self.checkpoint_key_file is not None:
            return self.checkpoint_key_file.read_text().strip()
        return None

    def redrive_signer(self) -> EventSigner | None:
        """The redrive signing identity, or None (then redriven records are unsigned)."""
        return EventSigner.configured(self.redrive_key, self.redrive_key_file)

    def kafka_group(self, topic: str) -> str:
        """Consumer group of `topic`'s pipeline: one group per topic, so one stream's rebalances never stall the
        other's. Stored offsets are keyed by `group_id` and topic either way."""
        base = self.kafka_group_id or self.group_id
        return base if topic == self.audit_topic else f"{base}.logs"
