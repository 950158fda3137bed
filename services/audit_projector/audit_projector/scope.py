"""What an investigation rebuild keeps: one tenant, one entity and/or a time window of actions, with their outcomes
and execution logs. Decided on each action's start; its outcome and log lines follow it by audit id."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, model_validator

from audit_schemas import ActionEvent, ExecutionLogEvent, OutcomeEvent


class ReplayScope(BaseModel):
    """The part of the log an investigation rebuild projects (all given conditions hold); times are the actions'
    start times, half-open [since, until)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str | None = None
    entity_model: str | None = None
    entity_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @model_validator(mode="after")
    def _sensible(self) -> Self:
        if (self.entity_model is None) != (self.entity_id is None):
            raise ValueError("an entity is given as model and id together")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("the window is empty: since must be earlier than until")
        if all(v is None for v in (self.tenant, self.entity_id, self.since, self.until)):
            raise ValueError("a scope needs at least one condition (tenant, entity, since or until)")
        return self

    def describe(self) -> str:
        """The scope in a line, for reports."""
        parts = [f"tenant {self.tenant}"] if self.tenant else []
        parts += [f"entity {self.entity_model}/{self.entity_id}"] if self.entity_id else []
        parts += [f"since {self.since.isoformat()}"] if self.since else []
        parts += [f"until {self.until.isoformat()}"] if self.until else []
        return ", ".join(parts)


@dataclass
class Selector:
    """Applies a scope while the audit topic is read (starts decide), then the log topic (lines follow their
    action); holds the kept audit ids, so it lives as long as the rebuild."""

    scope: ReplayScope
    kept: set[UUID] = field(default_factory=set)

    def keep(self, event: ActionEvent | OutcomeEvent | ExecutionLogEvent) -> bool:
        """Whether the event belongs in the investigation schema."""
        if isinstance(event, ActionEvent):
            d = event.data
            s = self.scope
            inside = (
                (s.tenant is None or d.tenant_id == s.tenant)
                and (s.entity_id is None or (d.entity.model, d.entity.id) == (s.entity_model, s.entity_id))
                and (s.since is None or event.time >= s.since)
                and (s.until is None or event.time < s.until)
            )
            if inside:
                self.kept.add(d.audit_id)
            return inside
        if isinstance(event, OutcomeEvent):
            return event.data.audit_id in self.kept
        return UUID(hex=event.data.trace_id) in self.kept


__all__ = ["ReplayScope", "Selector"]
