"""What the body of an action can tell the outcome event: the new revision and the change set."""

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from audit_producer.errors import InvalidActionError
from audit_schemas import Action, Entity, FieldChange
from audit_schemas.storable import BIGINT_MAX, check_text


@dataclass(slots=True)
class ActionScope:
    """Yielded by `AuditProducer.action()`; set `revision` and record changes before the body ends.

    Values are checked when they are set, inside the body, so a bad one fails the action (and is
    recorded as its failure) instead of leaving an outcome that cannot be published.
    """

    audit_id: UUID
    """The audit log id; also the trace id."""
    action: Action
    entity: Entity
    tenant_id: str
    traceparent: str
    """Hand this to work running elsewhere so its logs join this action."""
    changes: dict[str, FieldChange] = field(default_factory=dict)
    _revision: int | None = None

    @property
    def revision(self) -> int | None:
        """The entity's revision after this action, if the body set one."""
        return self._revision

    @revision.setter
    def revision(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BIGINT_MAX
        ):
            raise InvalidActionError(f"revision must be an integer from 0 to 2**63-1, not {value!r}")
        self._revision = value

    @property
    def trace_id(self) -> str:
        """The audit id as 32 hex digits."""
        return self.audit_id.hex

    def change(self, name: str, before: Any, after: Any) -> None:
        """Record one field's before and after values (JSON-compatible)."""
        try:
            check_text(name)
        except ValueError as e:
            raise InvalidActionError(f"change name {name!r} {e}") from e
        try:
            self.changes[name] = FieldChange(before=before, after=after)
        except ValidationError as e:
            raise InvalidActionError(f"change of {name!r} is not JSON-compatible: {e.errors()[0]['msg']}") from e

    def set_changes(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        """Record every field whose value differs between two snapshots."""
        for name in sorted(before.keys() | after.keys()):
            if before.get(name) != after.get(name):
                self.change(name, before.get(name), after.get(name))
