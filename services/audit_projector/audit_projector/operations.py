"""Operator actions on the log: skip past a blocking record, and redrive dead letters to their source topic.

Neither writes read-model rows: a skip asks the running projector to dead-letter a record (or move past a
range the broker lost), and a redrive re-publishes a dead letter, so the log stays the only source of truth.
"""

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import asyncpg
from aiokafka import AIOKafkaProducer

from audit_projector.config import Settings
from audit_projector.errors import ProjectorError, db_errors, kafka_errors
from audit_schemas import EnvelopeError, NewerSchemaError, decode, postgres, signing
from audit_schemas.checkpoint import CheckpointError

_REDRIVE_LOCK: Final = (0x41554454, 0x52445256)  # "AUDT", "RDRV": one redrive at a time per database
_EVIDENCE: Final = {
    signing.KEY_ID_HEADER: "audit.redrive.original-key-id",
    signing.SIGNATURE_HEADER: "audit.redrive.original-signature",
}
"""A redriven record keeps the original signature as evidence under these names; the redrive key signs it."""


class OperationError(ProjectorError):
    """An operator request that cannot be carried out as asked."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters to redrive: all, those with a reason, or one record by its source coordinates."""

    reason: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    @property
    def one(self) -> bool:
        """True when the selection names a single record."""
        return None not in (self.topic, self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class Redriven:
    """A dead letter re-published: where it came from and where it went."""

    topic: str
    partition: int
    offset: int
    reason: str
    new_partition: int
    new_offset: int
    fixed: bool


@asynccontextmanager
async def _connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    with db_errors("cannot connect to the read model"):
        conn = await postgres.connect(
            str(settings.database_url),
            server_settings={"search_path": settings.db_schema, "application_name": "audit-projector/operator"},
        )
    try:
        yield conn
    finally:
        await conn.close()


class NotTheBlockingRecordError(OperationError):
    """A dead-letter skip named a record that is not the one its partition is blocked at (`--force` overrides)."""


async def request_skip(
    settings: Settings,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    *,
    move_to: bool,
    by: str | None,
    force: bool = False,
) -> str:
    """Record a skip request for the running projector; return what it will do.

    A dead-letter skip takes the record the partition is blocked at, and only that one: dead-lettering a valid
    record by a typo in the offset is refused unless `force` says the operator means it.
    """
    if not reason.strip():
        raise OperationError("a skip needs a reason (--reason), kept with the dead letter")
    if topic not in settings.topics:
        raise OperationError(f"{topic!r} is not a projected topic ({', '.join(settings.topics)})")
    async with _connection(settings) as conn:
        with db_errors("cannot record the skip request"):
            stored = await conn.fetchval(
                "SELECT next_offset FROM projector_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
                settings.group_id,
                topic,
                partition,
            )
            if stored is not None and offset < stored:
                raise OperationError(f"{topic}/{partition} is already past offset {offset} (stored offset {stored})")
            if move_to and stored is not None and offset == stored:
                raise OperationError(f"{topic}/{partition} already stands at offset {offset}")
            blocked = await conn.fetchval(
                "SELECT kafka_offset FROM projector_blocks WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
                settings.group_id,
                topic,
                partition,
            )
            if not move_to and not force and blocked != offset:
                where = "is not blocked" if blocked is None else f"is blocked at offset {blocked}"
                raise NotTheBlockingRecordError(
                    f"{topic}/{partition} {where}: the record at offset {offset} is not the one blocking it "
                    "(--force dead-letters it anyway)"
                )
            added = await conn.fetchval(
                """INSERT INTO projector_skips (consumer_group, topic, partition, kafka_offset, kind, reason,
                                                requested_by)
                   VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, current_user))
                   ON CONFLICT DO NOTHING RETURNING 1""",
                settings.group_id,
                topic,
                partition,
                offset,
                "move_to" if move_to else "dead_letter",
                reason,
                by,
            )
    if added is None:
        raise OperationError(f"a skip request for {topic}/{partition}@{offset} already exists")
    if move_to:
        return f"{topic}/{partition} will move from offset {stored} to {offset}; records in between are not projected"
    return f"the record at {topic}/{partition}@{offset} will be dead-lettered with reason operator_skip"


async def redrive(
    settings: Settings,
    selection: Selection,
    *,
    value: bytes | None = None,
    note: str | None = None,
    dry_run: bool = False,
    limit: int = 10_000,
) -> list[Redriven]:
    """Re-publish selected dead letters (never redriven before) to their source topic, and record each."""
    try:
        signer = settings.redrive_signer()
    except (OSError, CheckpointError) as e:
        raise OperationError(f"cannot load the redrive signing key: {e}") from e
    if signer is None and settings.kafka.sasl and not dry_run:
        raise OperationError(
            "Kafka SASL is on, so redriven records must be signed: set AUDIT_PROJECTOR_REDRIVE_KEY(_FILE) to the "
            "redrive identity's key (never the original service's)"
        )
    if value is not None:
        if not selection.one:
            raise OperationError("a fixed value replaces one record: name it with --topic, --partition and --offset")
        try:
            decode(value)
        except (EnvelopeError, NewerSchemaError) as e:
            raise OperationError(f"the fixed value would be refused again: {e}") from e
    async with _connection(settings) as conn:
        with db_errors("cannot lock redrives"):
            await conn.execute("SELECT pg_advisory_lock($1, $2)", *_REDRIVE_LOCK)
        letters = await _select(conn, selection, limit)
        if selection.one and not letters:
            raise OperationError("no dead letter that was not redriven already at those coordinates")
        if dry_run or not letters:
            return [Redriven(r[0], r[1], r[2], r[3], -1, -1, value is not None) for r in letters]
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(settings.publish_timeout_s * 1000),
            **settings.kafka.client_options(),
        )
        done: list[Redriven] = []
        with kafka_errors("cannot publish redriven records"):
            await producer.start()
            try:
                for r in letters:
                    done.append(await _redrive_one(conn, producer, r, value, note, signer))
            finally:
                await producer.stop()
    return done


async def _select(conn: asyncpg.Connection, selection: Selection, limit: int) -> list[asyncpg.Record]:
    with db_errors("cannot read dead letters"):
        rows: list[asyncpg.Record] = await conn.fetch(
            """SELECT d.kafka_topic, d.kafka_partition, d.kafka_offset, d.reason, d.record_key, d.record_value,
                      d.record_headers
                 FROM dead_letters d
                 LEFT JOIN redrives r USING (kafka_topic, kafka_partition, kafka_offset)
                WHERE r.kafka_topic IS NULL
                  AND ($1::text IS NULL OR d.reason = $1)
                  AND ($2::text IS NULL OR d.kafka_topic = $2)
                  AND ($3::int IS NULL OR d.kafka_partition = $3)
                  AND ($4::bigint IS NULL OR d.kafka_offset = $4)
                ORDER BY d.kafka_topic, d.kafka_partition, d.kafka_offset
                LIMIT $5""",
            selection.reason,
            selection.topic,
            selection.partition,
            selection.offset,
            limit,
        )
    return rows


async def _redrive_one(
    conn: asyncpg.Connection,
    producer: AIOKafkaProducer,
    r: asyncpg.Record,
    value: bytes | None,
    note: str | None,
    signer: signing.EventSigner | None,
) -> Redriven:
    topic, partition, offset, reason = r["kafka_topic"], r["kafka_partition"], r["kafka_offset"], r["reason"]
    headers = [(_EVIDENCE.get(k, k), base64.b64decode(v)) for k, v in json.loads(r["record_headers"])]
    headers += [
        ("audit.redrive.source", f"{topic}/{partition}@{offset}".encode()),
        ("audit.redrive.reason", reason.encode()),
        ("audit.redrive.fixed", b"true" if value is not None else b"false"),
    ]
    body = value if value is not None else r["record_value"]
    if signer is not None:
        headers = signer.sign_into(topic, r["record_key"], body, headers)
    sent = await producer.send_and_wait(topic, value=body, key=r["record_key"], headers=headers)
    with db_errors("cannot record the redrive"):
        await conn.execute(
            """INSERT INTO redrives (kafka_topic, kafka_partition, kafka_offset, fixed, new_partition, new_offset, note)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            topic,
            partition,
            offset,
            value is not None,
            sent.partition,
            sent.offset,
            note,
        )
    return Redriven(topic, partition, offset, reason, sent.partition, sent.offset, value is not None)
