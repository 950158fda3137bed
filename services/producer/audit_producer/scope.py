"""What the body of an action can tell the outcome event: the new revision and the change set."""

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from audit_schemas import Action, Entity, FieldChange


@dataclass(slots=True)
class ActionScope:
    """Yielded by `AuditProducer.action()`; set `revision` and record changes before the body ends."""

    audit_id: UUID
    """The audit log id; also the trace id."""
    action: Action
    entity: Entity
    tenant_id: str
    traceparent: str
    """Hand this to work running elsewhere so its logs join this action."""
    revision: int | None = None
    changes: dict[str, FieldChange] = field(default_factory=dict)

    @property
    def trace_id(self) -> str:
        """The audit id as 32 hex digits."""
        return self.audit_id.hex

    def change(self, name: str, before: Any, after: Any) -> None:
        """Record one field's before and after values (JSON-compatible)."""
        self.changes[name] = FieldChange(before=before, after=after)

    def set_changes(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        """Record every field whose value differs between two snapshots."""
        for name in sorted(before.keys() | after.keys()):
            if before.get(name) != after.get(name):
                self.change(name, before.get(name), after.get(name))
