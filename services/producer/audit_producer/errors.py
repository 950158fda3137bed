"""The producer library's exceptions."""

from uuid import UUID


class AuditError(RuntimeError):
    """Root of everything audit_producer raises on purpose."""


class PublishError(AuditError):
    """Kafka did not acknowledge an audit event within the publish deadline; the action is not recorded."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable
        """True for timeouts and lost connections (may pass later); False when Kafka refused the record."""


class KeyServiceError(PublishError):
    """The key service did not grant the subjects' keys, so personal fields cannot be sealed: the action is not
    recorded and its body does not run (nothing personal is ever sent or spooled in clear)."""


class InvalidActionError(AuditError, ValueError):
    """The action, entity or actor given to `action()` does not satisfy the contract."""


class NotStartedError(AuditError):
    """The producer was used before `start()` (or outside `async with`)."""


class SpoolError(AuditError):
    """The local spool could not be opened or written."""


class SpoolFullError(SpoolError):
    """The local spool reached its record or byte bound."""


class OutcomeNotRecordedError(AuditError):
    """The action's body ran, but its outcome could be neither published nor spooled: side effects happened."""

    def __init__(self, audit_id: UUID, reason: str) -> None:
        super().__init__(f"the outcome of action {audit_id} was not recorded (its body did run): {reason}")
        self.audit_id = audit_id
