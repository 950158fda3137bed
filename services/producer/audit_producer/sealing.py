"""Sealing an action's personal fields before anything is encoded: redact → seal → encode → sign.

The actor's id and name and the request's address and user agent are sealed under the actor's key (a user);
an entity of a personal model (e.g. `user`) is named by its pseudonym, its id sealed under its own key; change-set
keys and log fields named personal are sealed under the entity's key when it is personal, else the actor's.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from audit_producer.keys import SubjectKey
from audit_schemas import ActionStarted, Actor, ActorType, Entity, FieldChange
from audit_schemas.escrow import WITHHELD, Escrowed, Subject, seal_escrow
from audit_schemas.sealing import Sealed, inline, seal

WITHHELD_MARK = "$withheld"
"""A personal value withheld from a record until its escrow is resolved (or, in a log line, for good)."""
FieldSealer = Callable[[dict[str, Any], UUID], dict[str, Any]]
"""Seals the personal fields of one log line (its fields, its log id)."""


def _normal(name: str) -> str:
    return name.strip().lower().replace("-", "_")


@dataclass(frozen=True, slots=True)
class PersonalData:
    """What is personal: field names (change-set keys, log fields) and entity models whose ids name a person."""

    fields: frozenset[str]
    models: frozenset[str]

    @classmethod
    def of(cls, fields: tuple[str, ...], models: tuple[str, ...]) -> "PersonalData":
        return cls(frozenset(_normal(f) for f in fields), frozenset(models))

    def subjects(self, actor: Actor, entity: Entity) -> tuple[str | None, str | None]:
        """The data subjects of an action: its actor (a user) and its entity (of a personal model)."""
        person = actor.id if actor.type is ActorType.USER else None
        return person, entity.id if entity.model in self.models else None


@dataclass(frozen=True, slots=True)
class ActionKeys:
    """The keys one action seals with."""

    tenant: str
    actor: SubjectKey | None
    entity: SubjectKey | None

    @property
    def holder(self) -> SubjectKey | None:
        """Whose data a change set or log line holds: the entity's when it is a person, else the actor's."""
        return self.entity or self.actor


def _sealed(key: SubjectKey, value: Any, tenant: str, event_id: UUID, path: str) -> Sealed:
    return seal(key.key, key.pseudonym, key.generation, value, tenant, event_id, path)


def seal_start(data: ActionStarted, keys: ActionKeys) -> ActionStarted:
    """The start with its personal fields sealed (version 3), or unchanged when it names no subject."""
    tenant, audit_id = data.tenant_id, data.audit_id
    sealed: dict[str, Sealed] = {}
    update: dict[str, Any] = {}
    if keys.actor is not None and data.actor.id is not None:
        k = keys.actor
        sealed["actor.id"] = _sealed(k, data.actor.id, tenant, audit_id, "actor.id")
        if data.actor.display_name is not None:
            sealed["actor.display_name"] = _sealed(k, data.actor.display_name, tenant, audit_id, "actor.display_name")
        update["actor"] = data.actor.model_copy(update={"id": k.pseudonym, "display_name": None})
        request = data.request
        if request is not None and (request.client_ip is not None or request.user_agent is not None):
            if request.client_ip is not None:
                sealed["request.client_ip"] = _sealed(k, str(request.client_ip), tenant, audit_id, "request.client_ip")
            if request.user_agent is not None:
                sealed["request.user_agent"] = _sealed(k, request.user_agent, tenant, audit_id, "request.user_agent")
            update["request"] = request.model_copy(update={"client_ip": None, "user_agent": None})
    if keys.entity is not None:
        k = keys.entity
        sealed["entity.id"] = _sealed(k, data.entity.id, tenant, audit_id, "entity.id")
        update["entity"] = data.entity.model_copy(update={"id": k.pseudonym})
    if not sealed:
        return data
    return data.model_copy(update={**update, "sealed": sealed, "schema_version": 3})


def seal_changes(
    changes: dict[str, FieldChange], personal: PersonalData, keys: ActionKeys, tenant: str, audit_id: UUID
) -> dict[str, FieldChange]:
    """The change set with the values of personal keys sealed (before and after, each bound to its path)."""
    key = keys.holder
    if key is None or not personal.fields:
        return changes
    out = dict(changes)
    for name, change in changes.items():
        if _normal(name) in personal.fields:
            out[name] = FieldChange(
                before=_inline_or_none(key, change.before, tenant, audit_id, f"changes.{name}.before"),
                after=_inline_or_none(key, change.after, tenant, audit_id, f"changes.{name}.after"),
            )
    return out


def _inline_or_none(key: SubjectKey, value: Any, tenant: str, event_id: UUID, path: str) -> Any:
    """A null stays null (there is nothing personal in "no value"); anything else is sealed."""
    return None if value is None else inline(_sealed(key, value, tenant, event_id, path))


def field_sealer(personal: PersonalData, keys: ActionKeys) -> FieldSealer | None:
    """What seals the personal fields of the action's log lines, or None when nothing would be."""
    key = keys.holder
    if key is None or not personal.fields:
        return None

    def seal_fields(fields: dict[str, Any], log_id: UUID) -> dict[str, Any]:
        if not any(_normal(name) in personal.fields for name in fields):
            return fields
        return {
            name: _inline_or_none(key, value, keys.tenant, log_id, f"fields.{name}")
            if _normal(name) in personal.fields
            else value
            for name, value in fields.items()
        }

    return seal_fields


@dataclass(frozen=True, slots=True)
class Withheld:
    """No keys to hand (fail-open, the key service did not answer): an action's personal fields are withheld from
    its records and sealed to the key service's escrow key; the records wait in the spool until it resolves them."""

    tenant: str
    escrow_key: bytes
    actor: str | None
    """The subject ids: the actor (a user) and the entity (of a personal model)."""
    entity: str | None

    def subjects(self) -> dict[Subject, str]:
        found: dict[Subject, str] = {}
        if self.actor is not None:
            found["actor"] = self.actor
        if self.entity is not None:
            found["entity"] = self.entity
        return found

    def escrow(self, values: dict[str, Any], event_id: UUID) -> str:
        return seal_escrow(self.escrow_key, Escrowed(subjects=self.subjects(), values=values), self.tenant, event_id)


def withhold_start(data: ActionStarted, withheld: Withheld) -> tuple[ActionStarted, str | None]:
    """The start with its personal fields withheld, and their escrow (None when it names no subject)."""
    values: dict[str, Any] = {}
    update: dict[str, Any] = {}
    if withheld.actor is not None and data.actor.id is not None:
        values["actor.id"] = data.actor.id
        if data.actor.display_name is not None:
            values["actor.display_name"] = data.actor.display_name
        update["actor"] = data.actor.model_copy(update={"id": WITHHELD, "display_name": None})
        request = data.request
        if request is not None and (request.client_ip is not None or request.user_agent is not None):
            if request.client_ip is not None:
                values["request.client_ip"] = str(request.client_ip)
            if request.user_agent is not None:
                values["request.user_agent"] = request.user_agent
            update["request"] = request.model_copy(update={"client_ip": None, "user_agent": None})
    if withheld.entity is not None:
        values["entity.id"] = data.entity.id
        update["entity"] = data.entity.model_copy(update={"id": WITHHELD})
    if not values:
        return data, None
    return data.model_copy(update={**update, "schema_version": 3}), withheld.escrow(values, data.audit_id)


def withhold_changes(
    changes: dict[str, FieldChange], personal: PersonalData, withheld: Withheld, audit_id: UUID
) -> tuple[dict[str, FieldChange], str | None]:
    """The change set with personal values withheld (null stays null), and their escrow (None: nothing withheld)."""
    values: dict[str, Any] = {}
    out = dict(changes)
    if not withheld.subjects():
        return out, None
    for name, change in changes.items():
        if _normal(name) in personal.fields:
            for side, value in (("before", change.before), ("after", change.after)):
                if value is not None:
                    values[f"changes.{name}.{side}"] = value
            out[name] = FieldChange(
                before=None if change.before is None else {WITHHELD_MARK: True},
                after=None if change.after is None else {WITHHELD_MARK: True},
            )
    if not values and withheld.entity is None:
        return changes, None
    # Also with no value to keep: a withheld entity id is resolved through the outcome's own escrow.
    return out, withheld.escrow(values, audit_id)


def withholding_fields(personal: PersonalData, withheld: Withheld) -> FieldSealer | None:
    """Log lines are not spooled: while the keys are missing, their personal fields are withheld, not kept."""
    if not withheld.subjects() or not personal.fields:
        return None

    def withhold(fields: dict[str, Any], log_id: UUID) -> dict[str, Any]:
        return {
            name: {WITHHELD_MARK: "the key service did not answer"} if _normal(name) in personal.fields else value
            for name, value in fields.items()
        }

    return withhold
