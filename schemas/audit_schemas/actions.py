"""The closed set of actions an audit entry can record."""

from enum import StrEnum


class Action(StrEnum):
    """One of the 13 actions; anything else is rejected by the producer and dead-lettered downstream."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    EXECUTE = "execute"
    APPROVE = "approve"
    REJECT = "reject"
    DESTROY = "destroy"
    RECREATE = "recreate"
    RETRY = "retry"
    SYNC = "sync"
    ENABLE = "enable"
    DISABLE = "disable"
    DRYRUN = "dryrun"


class ActorType(StrEnum):
    """Who performed an action: a person, a service account, or the system itself (no human user)."""

    USER = "user"
    SERVICE_ACCOUNT = "service_account"
    SYSTEM = "system"


class OutcomeStatus(StrEnum):
    """How an action ended; `aborted` (outcome schema version 2) means its body never ran."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


class LogLevel(StrEnum):
    """Execution-log severity, as structlog and stdlib logging name them."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"
