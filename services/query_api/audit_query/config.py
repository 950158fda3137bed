"""Query API settings, read from `AUDIT_QUERY_*` and validated at start-up."""

from typing import Annotated, Literal, Self

from pydantic import Field, PostgresDsn, SecretStr, StringConstraints, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from audit_schemas.topics import AUDIT_TOPIC, EXECUTION_LOG_TOPIC

_DEV_SECRET = "development-only-cursor-secret"


class Settings(BaseSettings):
    """Database, Kafka (for lag), cursor signing and paging limits."""

    model_config = SettingsConfigDict(env_prefix="AUDIT_QUERY_", frozen=True, extra="forbid")

    environment: Literal["development", "test", "production"] = "production"
    """Only `development` may run with the built-in cursor key; everything else needs real secrets."""
    database_url: PostgresDsn = PostgresDsn("postgresql://audit_query@127.0.0.1:15432/audit")
    db_schema: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "audit"
    bootstrap_servers: str = "127.0.0.1:19092"
    projector_group: str = "audit-projector"
    topics: tuple[str, ...] = (AUDIT_TOPIC, EXECUTION_LOG_TOPIC)
    cursor_secret: SecretStr = SecretStr(_DEV_SECRET)
    """Signs pagination cursors so a client cannot forge or replay one against another query."""
    unknown_after_s: Annotated[float, Field(gt=0)] = 900.0
    """An action with no outcome after this long shows as `unknown` rather than `in_progress`."""
    max_ready_lag: Annotated[int, Field(ge=0)] | None = None
    """When set, readiness reports `degraded` while the projector is further behind than this many records."""
    default_limit: Annotated[int, Field(ge=1, le=1000)] = 50
    max_limit: Annotated[int, Field(ge=1, le=5000)] = 500
    max_logs: Annotated[int, Field(ge=1, le=100_000)] = 5000
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080

    @model_validator(mode="after")
    def _real_secret_outside_development(self) -> Self:
        secret = self.cursor_secret.get_secret_value()
        if self.environment != "development" and (secret == _DEV_SECRET or len(secret) < 32):
            raise ValueError(
                "AUDIT_QUERY_CURSOR_SECRET must be set to a random secret of 32+ characters "
                "(only AUDIT_QUERY_ENVIRONMENT=development may use the built-in key)"
            )
        return self
