"""What the body of an action can tell the outcome event: the new revision and the change set."""

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from audit_producer.encoding import json_key, safe_text, text_problem, to_json
from audit_producer.redaction import Redactor
from audit_producer.sealing import ActionKeys, Withheld
from audit_schemas import Action, Entity, FieldChange
from audit_schemas.storable import BIGINT_MAX


@dataclass(slots=True)
class ActionScope:
    """Yielded by `AuditProducer.action()`; set `revision` and record changes before the body ends.

    Nothing here raises into the body: a value that cannot be recorded (not encodable, too large, a revision
    out of range) becomes a marker in the outcome, and its name and the reason go to `unrecorded`.
    """

    audit_id: UUID
    """The audit log id; also the trace id."""
    action: Action
    entity: Entity
    tenant_id: str
    traceparent: str
    """Hand this to work running elsewhere so its logs join this action."""
    tracestate: str | None = None
    """Hand this on beside `traceparent`: it carries the tenant (`resume_trace(traceparent, tracestate)`)."""
    max_value_bytes: int = 64 * 1024
    redactor: Redactor = field(default_factory=Redactor)
    """Masks secrets in what the body records, before anything is encoded."""
    sealing: "ActionKeys | Withheld | None" = None
    """The keys that seal the outcome's personal change values, or what withholds them (set by the producer)."""
    start_escrow: str | None = None
    """The escrow of the start's withheld fields (fail-open without keys)."""
    outcome_escrow: str | None = None
    changes: dict[str, FieldChange] = field(default_factory=dict)
    unrecorded: dict[str, str] = field(default_factory=dict)
    """Values that could not be recorded as given (path → why)."""
    _revision: int | None = None

    @property
    def revision(self) -> int | None:
        """The entity's revision after this action, if the body set a valid one."""
        return self._revision

    @revision.setter
    def revision(self, value: int | None) -> None:
        if value is None or (not isinstance(value, bool) and isinstance(value, int) and 0 <= value <= BIGINT_MAX):
            self._revision = value
            self.unrecorded.pop("revision", None)
            return
        self._revision = None
        self.unrecorded["revision"] = f"not an integer from 0 to 2**63-1: {safe_text(repr(value), 200)}"

    @property
    def trace_id(self) -> str:
        """The audit id as 32 hex digits."""
        return self.audit_id.hex

    def change(self, name: Any, before: Any, after: Any) -> None:
        """Record one field's before and after values, encoded now (later mutation of the objects is not seen)."""
        key = json_key(name)
        if (why := text_problem(key)) is not None:
            self.unrecorded[f"changes.{safe_text(key, 64)}"] = f"field name {why}"
            key = safe_text(key, 256)
        path = f"changes.{key}"
        found: dict[str, str] = {}
        if self.redactor.sensitive(key):
            encoded_before: Any = None if before is None else self.redactor.marker(before)
            encoded_after: Any = None if after is None else self.redactor.marker(after)
        else:
            encoded_before = self.redactor.tree(
                to_json(before, f"{path}.before", found, max_bytes=self.max_value_bytes)
            )
            encoded_after = self.redactor.tree(to_json(after, f"{path}.after", found, max_bytes=self.max_value_bytes))
        for stale in [p for p in self.unrecorded if p.startswith(f"{path}.")]:
            del self.unrecorded[stale]
        self.unrecorded.update(found)
        self.changes[key] = FieldChange(before=encoded_before, after=encoded_after)

    def set_changes(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        """Record every field whose value differs between two snapshots."""
        for name in sorted(before.keys() | after.keys(), key=json_key):
            if before.get(name) != after.get(name):
                self.change(name, before.get(name), after.get(name))
