"""The projector's hot-path stages on their own, without Kafka or PostgreSQL: decoding with provenance, planning a
partition's records into a batch, and the Merkle leaves a batch appends."""

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from audit_projector.pipeline.decoding import Provenance, decode_batch
from audit_projector.pipeline.planning import Plan
from audit_projector.pipeline.trees import tree_append
from audit_projector.repository import ProducerKey, Skip, TreeState
from audit_projector.rows import Coordinates
from audit_schemas import EnvelopeError, encode, merkle
from audit_schemas.checkpoint import NoteSigner
from audit_schemas.signing import EventSigner
from tests.factories import action_event, key_of, log_event, outcome_event

TOPIC = "t.audit"


def _record(
    offset: int, value: bytes, key: bytes | None = b"k", headers: tuple[tuple[str, bytes], ...] = ()
) -> ConsumerRecord:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    return ConsumerRecord(TOPIC, 0, offset, now_ms, 0, key, value, None, 0, len(value), headers)


def _history() -> list[ConsumerRecord]:
    """A start, a log line, its outcome, a failed action, a garbage record and an identical re-send."""
    start = action_event("r-1", tenant="acme")
    failed = action_event("r-2", tenant="globex")
    values = [
        encode(start),
        encode(log_event(start, "resizing")),
        encode(outcome_event(start)),
        encode(failed),
        encode(outcome_event(failed, "failed")),
        b"{not json",
        encode(start),
    ]
    return [_record(i, v, key_of(start)) for i, v in enumerate(values)]


def test_decoding_turns_records_into_rows_and_poison_into_reasons() -> None:
    decoded = asyncio.run(decode_batch({TopicPartition(TOPIC, 0): _history()}, Provenance()))
    items = [d.item for d in decoded[TopicPartition(TOPIC, 0)]]
    assert [type(i).__name__ for i in items] == ["tuple"] * 5 + ["EnvelopeError", "tuple"]
    assert [i[0] for i in items if isinstance(i, tuple)] == [
        "entries", "logs", "outcomes", "entries", "outcomes", "entries",
    ]  # fmt: skip


def test_provenance_refuses_what_no_registered_key_may_have_published() -> None:
    signer, _ = NoteSigner.generate("billing")
    events = EventSigner(signer)
    start = action_event("r-1", tenant="acme")
    value = encode(start)
    signed = _record(0, value, key_of(start), tuple(events.headers(TOPIC, key_of(start), value)))
    now = datetime.now(UTC)
    key = ProducerKey(
        events.key_id, signer.public_key, frozenset({"tests"}), frozenset({"acme"}), now - timedelta(1), None
    )
    Provenance(keys={events.key_id: key}).check(signed, start)  # registered, this source, this tenant: accepted
    refusals = {
        "unknown_signing_key": Provenance(),
        "tenant_not_allowed": Provenance(keys={events.key_id: replace(key, tenants=frozenset({"globex"}))}),
        "source_not_allowed": Provenance(keys={events.key_id: replace(key, sources=frozenset({"billing"}))}),
        "key_not_valid": Provenance(keys={events.key_id: replace(key, valid_until=now - timedelta(hours=1))}),
    }
    for reason, provenance in refusals.items():
        with pytest.raises(EnvelopeError) as refused:
            provenance.check(signed, start)
        assert refused.value.reason == reason
    with pytest.raises(EnvelopeError) as unsigned:
        Provenance(require_signatures=True).check(_record(1, value), start)
    assert unsigned.value.reason == "unsigned"
    tampered = _record(2, value.replace(b"r-1", b"r-9"), key_of(start), signed.headers)
    with pytest.raises(EnvelopeError) as forged:
        Provenance(keys={events.key_id: key}).check(tampered, start)
    assert forged.value.reason == "bad_signature"


def test_planning_writes_rows_dead_letters_poison_and_skips_and_stops_before_a_newer_schema() -> None:
    decoded = asyncio.run(decode_batch({TopicPartition(TOPIC, 0): _history()}, Provenance()))[TopicPartition(TOPIC, 0)]
    reasons = {d.at.offset: d.item.reason for d in decoded if isinstance(d.item, EnvelopeError)}
    skip = Skip(TOPIC, 0, 3, "dead_letter", "bad deploy", "ops")
    plan = Plan()
    assert plan.add(decoded, {Coordinates(TOPIC, 0, 3): skip}) == 7  # every record consumed
    assert [(d.reason, d.offset) for d in plan.letters] == [("operator_skip", 3), (reasons[5], 5)]
    assert len(plan.batch.rows.dead_letters) == 2
    assert (len(plan.batch.rows.entries), len(plan.batch.rows.outcomes), len(plan.batch.rows.logs)) == (2, 2, 1)
    assert plan.projected == 5
    assert set(plan.records) == {Coordinates(TOPIC, 0, i) for i in range(7)}

    newer = encode(action_event("r-3")).replace(b'"schema_version":3', b'"schema_version":99', 1)
    later = asyncio.run(decode_batch({TopicPartition(TOPIC, 0): [_record(7, newer)]}, Provenance()))
    stopped = Plan()
    assert stopped.add(later[TopicPartition(TOPIC, 0)], {}) == 7  # the offset stays on the newer event
    assert [(b.reason, b.offset) for b in stopped.batch.blocks] == [("newer_schema", 7)]


def test_a_batch_appends_one_leaf_per_consumed_record_and_the_tree_it_makes() -> None:
    records = _history()
    first = tree_append((TOPIC, 0), TreeState(0), records[:3])
    second = tree_append((TOPIC, 0), first.after, records[3:])
    assert [leaf[:2] for leaf in (*first.leaves, *second.leaves)] == [(i, i) for i in range(7)]
    hashes = [leaf[2] for leaf in (*first.leaves, *second.leaves)]
    assert second.after.size == 7
    assert merkle.frontier_root(second.after.frontier) == merkle.root(hashes)  # as if appended in one batch
    assert second.before == first.after
