"""The producer library's exceptions."""


class AuditError(RuntimeError):
    """Root of everything audit_producer raises on purpose."""


class PublishError(AuditError):
    """Kafka did not acknowledge an audit event within the publish deadline; the action is not recorded."""


class InvalidActionError(AuditError, ValueError):
    """The action, entity or actor given to `action()` does not satisfy the contract."""


class NotStartedError(AuditError):
    """The producer was used before `start()` (or outside `async with`)."""
