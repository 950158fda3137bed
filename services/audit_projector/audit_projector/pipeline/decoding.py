"""Decode and verify: each polled record becomes its row, or the reason it cannot (poison, a newer schema), after
its signature is checked against the producer key registry."""

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from aiokafka import ConsumerRecord, TopicPartition

from audit_projector.repository import ProducerKey
from audit_projector.rows import Coordinates, Row, Table, row_for
from audit_projector.scope import Selector
from audit_schemas import ActionEvent, EnvelopeError, ExecutionLogEvent, NewerSchemaError, OutcomeEvent, decode, signing

_YIELD_EVERY: int = 64
"""Records decoded between two yields to the event loop, so the commit in flight makes progress."""


class Decoded(NamedTuple):
    """A polled record, where it sits, and the row it becomes (or why it cannot)."""

    record: ConsumerRecord
    at: Coordinates
    item: "tuple[Table, Row] | EnvelopeError | NewerSchemaError | None"
    """None: outside an investigation rebuild's scope (the offset moves on, nothing is written)."""


@dataclass
class Provenance:
    """Who may have published a record: signatures checked against the producer key registry."""

    require_signatures: bool = False
    keys: dict[str, ProducerKey] = field(default_factory=dict)

    def check(self, record: ConsumerRecord, event: ActionEvent | OutcomeEvent | ExecutionLogEvent) -> None:
        """The record's signature, by a registered key allowed this source and tenant at this time, or poison."""
        try:
            found = signing.signature_of(list(record.headers or ()))
        except ValueError as e:
            raise EnvelopeError("bad_signature", str(e)) from e
        if found is None:
            if self.require_signatures:
                raise EnvelopeError("unsigned", "signatures are required and this record carries none")
            return
        kid, signature = found
        key = self.keys.get(kid)
        if key is None:
            raise EnvelopeError("unknown_signing_key", f"key {kid} is not in the producer key registry")
        if not signing.verify(key.public_key, signature, record.topic, record.key, record.value):
            raise EnvelopeError("bad_signature", f"the signature by {kid} does not cover this record")
        when = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        if when < key.valid_from or (key.valid_until is not None and when >= key.valid_until):
            raise EnvelopeError("key_not_valid", f"key {kid} is not valid at {when.isoformat()}")
        if event.source not in key.sources:
            raise EnvelopeError("source_not_allowed", f"key {kid} may not write for source {event.source!r}")
        tenant = event.data.tenant_id
        if key.tenants is not None and tenant not in key.tenants:
            raise EnvelopeError("tenant_not_allowed", f"key {kid} may not write for tenant {tenant!r}")


async def decode_batch(
    fetched: dict[TopicPartition, list[ConsumerRecord]], provenance: Provenance, selector: Selector | None = None
) -> dict[TopicPartition, list[Decoded]]:
    """Decode records and build their rows: the CPU half of a batch, independent of stored positions. Outside an
    investigation rebuild's `selector`, a record (even a poisoned one) becomes None."""
    out: dict[TopicPartition, list[Decoded]] = {}
    done = 0
    for tp, polled in fetched.items():
        items: list[Decoded] = []
        for record in polled:
            at = Coordinates(tp.topic, tp.partition, int(record.offset))
            item: tuple[Table, Row] | EnvelopeError | NewerSchemaError | None
            try:
                event = decode(record.value)
                provenance.check(record, event)
                keep = selector is None or selector.keep(event)
                item = row_for(event, at) if keep else None
            except (EnvelopeError, NewerSchemaError) as e:
                item = None if selector is not None else e
            items.append(Decoded(record, at, item))
            done += 1
            if done % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        out[tp] = items
    return out
