"""The audit-id registry (`audit_ids`): each id claimed once, for one tenant, entity and action; conflicting events
refused, identical re-sends dropped and their verdicts kept (`record_verdicts`)."""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from audit_projector.errors import Rejection
from audit_projector.rows import BatchRows, Coordinates, Row


async def claim(conn: asyncpg.Connection, rows: BatchRows, rejected: list[Rejection]) -> list[Coordinates]:
    """Register the batch's audit ids; reject conflicting events, return identical re-sends to drop.

    The registry's primary key serialises projectors that see the same id on different partitions:
    the second insert waits for the first transaction and then finds its claim.
    """
    events = [r for r in (*rows.entries, *rows.outcomes) if r.claim is not None]
    if not events:
        return []
    # Within a batch a start claims before an outcome (partitions have no order between them).
    events.sort(key=lambda r: (r.claim is None or r.claim.kind != "start", r.at.topic, r.at.partition, r.at.offset))
    ids = list({r.claim.audit_id: None for r in events if r.claim is not None})
    first: dict[UUID, Row] = {}
    for r in events:
        assert r.claim is not None
        first.setdefault(r.claim.audit_id, r)
    claimed = {
        rec["audit_id"]
        for rec in await conn.fetch(
            """INSERT INTO audit_ids (audit_id, tenant_id, entity_model, entity_id, action,
                                      kafka_topic, kafka_partition, kafka_offset)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                    $6::text[], $7::int[], $8::bigint[])
               ON CONFLICT (audit_id) DO NOTHING
               RETURNING audit_id""",
            # In id order, so projectors claiming overlapping ids lock them in the same order (no deadlock).
            *_claim_columns(sorted(first.values(), key=lambda r: r.claim.audit_id if r.claim else UUID(int=0))),
        )
    }
    # Ids this batch claimed belong to their first row here; only the others need the stored claim.
    claims: dict[UUID, tuple[str, str, str, str, Coordinates]] = {}
    for audit_id in claimed:
        row = first[audit_id]
        assert row.claim is not None
        c = row.claim
        claims[audit_id] = (c.tenant_id, c.entity_model, c.entity_id, c.action, row.at)
    others = [i for i in ids if i not in claimed]
    if others:
        for rec in await conn.fetch(
            """SELECT audit_id, tenant_id, entity_model, entity_id, action,
                      kafka_topic, kafka_partition, kafka_offset
                 FROM audit_ids WHERE audit_id = ANY($1::uuid[])""",
            others,
        ):
            at = Coordinates(rec["kafka_topic"], rec["kafka_partition"], rec["kafka_offset"])
            claims[rec["audit_id"]] = (rec["tenant_id"], rec["entity_model"], rec["entity_id"], rec["action"], at)
    stored = await _stored_digests(conn, events, claims)
    duplicates: list[Coordinates] = []
    for r in events:
        claim = r.claim
        assert claim is not None
        *subject, owner_at = claims[claim.audit_id]
        if (claim.tenant_id, claim.entity_model, claim.entity_id, claim.action) != tuple(subject):
            reason = "audit_id_conflict" if claim.kind == "start" else "outcome_mismatch"
            tenant, model, entity, action = subject
            rejected.append(
                Rejection(
                    r.at.topic,
                    r.at.partition,
                    r.at.offset,
                    reason,
                    f"audit id {claim.audit_id} belongs to {tenant}/{model}/{entity} ({action}), claimed at "
                    f"{owner_at}; this {claim.kind} names {claim.tenant_id}/{claim.entity_model}/"
                    f"{claim.entity_id} ({claim.action})",
                )
            )
            continue
        key = (claim.kind, claim.audit_id)
        earlier = stored.get(key)
        if earlier is None:
            stored[key] = (claim.digest, r.at)
        elif earlier[0] == claim.digest:
            duplicates.append(r.at)
        else:
            rejected.append(
                Rejection(
                    r.at.topic,
                    r.at.partition,
                    r.at.offset,
                    "duplicate_audit_id" if claim.kind == "start" else "duplicate_outcome",
                    f"a different {claim.kind} event for audit id {claim.audit_id} is already recorded at {earlier[1]}",
                )
            )
    return duplicates


async def _stored_digests(
    conn: asyncpg.Connection, events: list[Row], claims: dict[UUID, tuple[str, str, str, str, Coordinates]]
) -> dict[tuple[str, UUID], tuple[bytes, Coordinates]]:
    """Digests of starts and outcomes already stored for the batch's ids (none on the common path)."""
    starts = [
        r.claim.audit_id
        for r in events
        if r.claim is not None and r.claim.kind == "start" and claims[r.claim.audit_id][4] != r.at
    ]
    outcomes = [r.claim.audit_id for r in events if r.claim is not None and r.claim.kind == "outcome"]
    found: dict[tuple[str, UUID], tuple[bytes, Coordinates]] = {}
    for kind, table, wanted in (("start", "audit_entries", starts), ("outcome", "audit_outcomes", outcomes)):
        if not wanted:
            continue
        for rec in await conn.fetch(
            f"""SELECT audit_id, content_digest, kafka_topic, kafka_partition, kafka_offset
                  FROM {table} WHERE audit_id = ANY($1::uuid[])""",
            wanted,
        ):
            at = Coordinates(rec["kafka_topic"], rec["kafka_partition"], rec["kafka_offset"])
            found[(kind, rec["audit_id"])] = (rec["content_digest"] or b"", at)
    return found


async def record_duplicates(conn: asyncpg.Connection, duplicates: Sequence[Coordinates]) -> None:
    """The verdict on each identical re-send the batch dropped."""
    await conn.executemany(
        """INSERT INTO record_verdicts (topic, partition, kafka_offset, verdict, detail)
           VALUES ($1, $2, $3, 'duplicate', 'an identical re-send of an event already recorded')
           ON CONFLICT DO NOTHING""",
        [(d.topic, d.partition, d.offset) for d in duplicates],
    )


def _claim_columns(rows: list[Row]) -> list[list[Any]]:
    claims = [(r.claim, r.at) for r in rows if r.claim is not None]
    return [
        [c.audit_id for c, _ in claims],
        [c.tenant_id for c, _ in claims],
        [c.entity_model for c, _ in claims],
        [c.entity_id for c, _ in claims],
        [c.action for c, _ in claims],
        [at.topic for _, at in claims],
        [at.partition for _, at in claims],
        [at.offset for _, at in claims],
    ]
