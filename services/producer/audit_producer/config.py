"""Producer settings, read from `AUDIT_PRODUCER_*`."""

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from audit_schemas.topics import AUDIT_TOPIC, EXECUTION_LOG_TOPIC


class Settings(BaseSettings):
    """Where events go and how long a publish may take."""

    model_config = SettingsConfigDict(env_prefix="AUDIT_PRODUCER_", frozen=True, extra="forbid")

    bootstrap_servers: str = "127.0.0.1:19092"
    audit_topic: str = AUDIT_TOPIC
    execution_log_topic: str = EXECUTION_LOG_TOPIC
    publish_timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    """Deadline for one audit event's acknowledgement (aiokafka alone would wait up to 40 s)."""
    linger_ms: Annotated[int, Field(ge=0, le=1000)] = 5
    log_queue_size: Annotated[int, Field(ge=1)] = 10_000
    """Execution-log lines waiting to be shipped; beyond this, lines are dropped and counted."""
