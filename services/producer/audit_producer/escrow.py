"""Completing an escrowed record once the key service answers: its withheld fields come back sealed under their
subjects' keys, its people named by their pseudonyms (the record key too), and only then is it sent."""

from typing import get_args

from audit_producer.errors import PublishError
from audit_producer.keys import KeyClient
from audit_producer.spool import SpooledRecord
from audit_schemas import (
    ActionEvent,
    EnvelopeError,
    FieldChange,
    NewerSchemaError,
    OutcomeEvent,
    decode,
    encode,
    kafka_headers,
)
from audit_schemas.escrow import ESCROW_HEADER, EscrowGrant
from audit_schemas.events import SealedPath
from audit_schemas.sealing import inline
from audit_schemas.topics import audit_key

_START_PATHS: frozenset[str] = frozenset(get_args(SealedPath))


async def resolve(client: KeyClient, record: SpooledRecord) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The record to send in place of an escrowed one; PublishError (retriable while the service is down)."""
    escrow = next(value.decode() for name, value in record.headers if name == ESCROW_HEADER)
    try:
        event = decode(record.value)
    except (EnvelopeError, NewerSchemaError) as e:
        raise PublishError(f"an escrowed record in the spool is not an event: {e}", retriable=False) from e
    if not isinstance(event, ActionEvent | OutcomeEvent):
        raise PublishError("only audit events are escrowed", retriable=False)
    grant = await client.resolve_escrow(event.data.tenant_id, event.data.audit_id, escrow)
    completed = _completed(event, grant)
    value = encode(completed)
    try:
        decode(value)  # what is sent passes the projector's own check
    except (EnvelopeError, NewerSchemaError) as e:
        raise PublishError(f"the resolved escrow does not make a valid event: {e}", retriable=False) from e
    return (completed.partitionkey or "").encode(), value, kafka_headers(completed)


def _completed(event: ActionEvent | OutcomeEvent, grant: EscrowGrant) -> ActionEvent | OutcomeEvent:
    d = event.data
    entity = d.entity
    if "entity" in grant.pseudonyms:
        entity = entity.model_copy(update={"id": grant.pseudonyms["entity"]})
    envelope = {
        "subject": f"{entity.model}/{entity.id}",
        "partitionkey": audit_key(d.tenant_id, entity.model, entity.id),
    }
    if isinstance(event, ActionEvent):
        start = event.data
        actor = start.actor
        if "actor" in grant.pseudonyms and "actor.id" in grant.sealed:
            actor = actor.model_copy(update={"id": grant.pseudonyms["actor"]})
        sealed = {path: value for path, value in grant.sealed.items() if path in _START_PATHS}
        data = start.model_copy(update={"actor": actor, "entity": entity, "sealed": sealed or None})
        return event.model_copy(update={"data": data, **envelope})
    changes = dict(event.data.changes or {})
    for path, value in grant.sealed.items():
        name, _, side = path.removeprefix("changes.").rpartition(".")
        if path.startswith("changes.") and name in changes and side in ("before", "after"):
            changes[name] = FieldChange.model_validate({**changes[name].model_dump(), side: inline(value)})
    outcome = event.data.model_copy(update={"entity": entity, "changes": changes or None})
    return event.model_copy(update={"data": outcome, **envelope})
