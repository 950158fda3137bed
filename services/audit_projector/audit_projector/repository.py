"""All of the projector's SQL: fenced batch writes, the audit-id registry, partitions, blocks and skips."""

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from uuid import UUID

import asyncpg

from audit_projector.errors import (
    FencedError,
    PausedError,
    RecordDataError,
    RecordsRejectedError,
    Rejection,
    db_errors,
    is_record_data_error,
)
from audit_projector.rows import (
    DEAD_LETTER_COLUMNS,
    ENTRY_COLUMNS,
    LOG_COLUMNS,
    OUTCOME_COLUMNS,
    BatchRows,
    Coordinates,
    Row,
)
from audit_schemas import postgres


def quoted(name: str) -> str:
    """A schema or table name as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class _Target:
    """A read-model table, its session staging table, columns and conflict target."""

    table: str
    stage: str
    columns: tuple[str, ...]
    conflict: str
    rollup: str | None = None
    """A statement counting the rows the insert returned (`ins`) into audit_rollups, in the same statement."""


# Starts count once, under their outcome's status when it is already there (an outcome before its start).
# Every statement that changes hourly rows bumps their days' change markers (see migration 0012).
_ENTRY_ROLLUP: Final = """
, counted AS (
    INSERT INTO audit_rollups AS r (bucket, tenant_id, action, entity_model, actor_type, status, kafka_partition,
                                    entries)
    SELECT date_trunc('hour', i.occurred_at, 'UTC'), i.tenant_id, i.action, i.entity_model, i.actor_type,
           coalesce(o.status, 'none'), i.kafka_partition, count(*)
      FROM ins i LEFT JOIN audit_outcomes o ON o.audit_id = i.audit_id
     GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (bucket, tenant_id, action, entity_model, actor_type, status, kafka_partition)
    DO UPDATE SET entries = r.entries + EXCLUDED.entries
)
, hours AS (
    INSERT INTO audit_rollup_hour_changes AS c (bucket, tenant_id, kafka_partition, changes)
    SELECT DISTINCT date_trunc('hour', i.occurred_at, 'UTC'), i.tenant_id, i.kafka_partition, 1 FROM ins i
    ON CONFLICT (bucket, tenant_id, kafka_partition) DO UPDATE SET changes = c.changes + 1
)
INSERT INTO audit_rollup_changes AS c (day, tenant_id, kafka_partition, changes)
SELECT DISTINCT date_trunc('day', i.occurred_at, 'UTC'), i.tenant_id, i.kafka_partition, 1 FROM ins i
ON CONFLICT (day, tenant_id, kafka_partition) DO UPDATE SET changes = c.changes + 1
"""

# An outcome moves its start from 'none' to its status (the UPDATE and the INSERT touch different rows).
_OUTCOME_ROLLUP: Final = """
, moved AS (
    SELECT date_trunc('hour', e.occurred_at, 'UTC') AS bucket, e.tenant_id, e.action, e.entity_model, e.actor_type,
           i.status, e.kafka_partition, count(*) AS n
      FROM ins i JOIN audit_entries e ON e.audit_id = i.audit_id
     GROUP BY 1, 2, 3, 4, 5, 6, 7
), taken AS (
    UPDATE audit_rollups r SET entries = r.entries - m.n
      FROM (SELECT bucket, tenant_id, action, entity_model, actor_type, kafka_partition, sum(n) AS n
              FROM moved GROUP BY 1, 2, 3, 4, 5, 6) m
     WHERE r.status = 'none' AND r.bucket = m.bucket AND r.tenant_id = m.tenant_id AND r.action = m.action
       AND r.entity_model = m.entity_model AND r.actor_type = m.actor_type AND r.kafka_partition = m.kafka_partition
), added AS (
    INSERT INTO audit_rollups AS r (bucket, tenant_id, action, entity_model, actor_type, status, kafka_partition,
                                    entries)
    SELECT bucket, tenant_id, action, entity_model, actor_type, status, kafka_partition, n FROM moved
    ON CONFLICT (bucket, tenant_id, action, entity_model, actor_type, status, kafka_partition)
    DO UPDATE SET entries = r.entries + EXCLUDED.entries
)
, hours AS (
    INSERT INTO audit_rollup_hour_changes AS c (bucket, tenant_id, kafka_partition, changes)
    SELECT DISTINCT bucket, tenant_id, kafka_partition, 1 FROM moved
    ON CONFLICT (bucket, tenant_id, kafka_partition) DO UPDATE SET changes = c.changes + 1
)
INSERT INTO audit_rollup_changes AS c (day, tenant_id, kafka_partition, changes)
SELECT DISTINCT date_trunc('day', bucket, 'UTC'), tenant_id, kafka_partition, 1 FROM moved
ON CONFLICT (day, tenant_id, kafka_partition) DO UPDATE SET changes = c.changes + 1
"""

_ENTRIES: Final = _Target(
    "audit_entries",
    "stage_audit_entries",
    ENTRY_COLUMNS,
    "(occurred_at, audit_id)",
    "RETURNING audit_id, occurred_at, tenant_id, action, entity_model, actor_type, kafka_partition)" + _ENTRY_ROLLUP,
)
_OUTCOMES: Final = _Target(
    "audit_outcomes",
    "stage_audit_outcomes",
    OUTCOME_COLUMNS,
    "(audit_id)",
    "RETURNING audit_id, status)" + _OUTCOME_ROLLUP,
)
_LOGS: Final = _Target("execution_logs", "stage_execution_logs", LOG_COLUMNS, "(logged_at, log_id)")
_DEAD: Final = _Target(
    "dead_letters", "stage_dead_letters", DEAD_LETTER_COLUMNS, "(kafka_topic, kafka_partition, kafka_offset)"
)
_PARTITIONED: Final = {"audit_entries": _ENTRIES, "execution_logs": _LOGS}

_WAITING_LEVELS: Final = frozenset({"on", "remote_write", "remote_apply"})
"""`synchronous_commit` levels that wait for a synchronous standby (when one is configured)."""

SESSION_SETTINGS: Final = {
    "lock_timeout": "15s",
    # Longer than a dead-letter publish, so only a stuck client loses its transaction.
    "idle_in_transaction_session_timeout": "120s",
}


async def open_session(
    dsn: str, schema: str, purpose: str, group_id: str, *, statement_timeout_s: float | None = None
) -> asyncpg.Connection:
    """A connection of the projector's own: `schema` first on the search path, named for what it does
    (`audit-projector/<purpose>/<group>`), with the session timeouts; driver errors as ProjectorErrors."""
    with db_errors(f"cannot open the {purpose} connection"):
        conn: asyncpg.Connection = await postgres.connect(
            dsn,
            command_timeout=statement_timeout_s,
            server_settings={
                "search_path": schema,
                "application_name": f"audit-projector/{purpose}/{group_id}"[:63],
                **SESSION_SETTINGS,
            },
        )
    return conn


@dataclass(frozen=True, slots=True)
class OffsetFence:
    """Move one partition's stored offset from `expected` to `next_offset`, or fail the batch."""

    topic: str
    partition: int
    expected: int | None
    """The stored offset the batch started from; None when no row existed."""
    next_offset: int


@dataclass(frozen=True, slots=True)
class Block:
    """A partition stopped before a record: newer schema, offset out of range or a database failure."""

    topic: str
    partition: int
    offset: int
    reason: str
    detail: str | None = None
    event_type: str | None = None
    schema_version: str | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    """An operator's request to dead-letter the record at `offset`, or to move the partition to `offset`."""

    topic: str
    partition: int
    offset: int
    kind: str
    reason: str
    requested_by: str


@dataclass(frozen=True, slots=True)
class ProducerKey:
    """A publisher's public key: the sources and tenants it may write for, and when."""

    key_id: str
    public_key: bytes
    sources: frozenset[str]
    tenants: frozenset[str] | None
    valid_from: datetime
    valid_until: datetime | None


@dataclass(frozen=True, slots=True)
class TreeState:
    """A partition's Merkle tree: how many leaves, and its right frontier."""

    size: int
    frontier: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class TreeAppend:
    """What a batch adds to one partition's tree: leaves, completed nodes, and the state before and after."""

    topic: str
    partition: int
    before: TreeState
    after: TreeState
    leaves: tuple[tuple[int, int, bytes, bytes], ...]
    """(leaf index, Kafka offset, leaf hash, leaf data)."""
    nodes: tuple[tuple[int, int, bytes], ...]
    """(level >= 1, index, hash)."""


@dataclass(slots=True)
class Batch:
    """What one transaction writes: rows, offset fences, blocks and Merkle tree appends."""

    rows: BatchRows = field(default_factory=BatchRows)
    fences: list[OffsetFence] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    trees: list[TreeAppend] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a committed batch inserted, and the re-sends it dropped as identical to what was stored."""

    duplicates: tuple[Coordinates, ...]


class ProjectionRepository:
    """Writes batches over one dedicated connection, whose session holds the staging tables."""

    def __init__(
        self, conn: asyncpg.Connection, schema: str, group_id: str, control_schema: str = "audit_control"
    ) -> None:
        self._conn = conn
        self._schema = schema
        self._group = group_id
        self._control = quoted(control_schema)
        self._months: set[tuple[str, date]] = set()
        self._commit_level: str | None = None

    @classmethod
    async def connect(
        cls,
        dsn: str,
        schema: str,
        group_id: str,
        purpose: str,
        control_schema: str = "audit_control",
        *,
        statement_timeout_s: float | None = None,
    ) -> "ProjectionRepository":
        """Open the connection with `schema` first on the search path, session timeouts and staging tables; a
        statement unanswered after `statement_timeout_s` raises (TimeoutError) and the connection is dropped."""
        conn = await open_session(dsn, schema, purpose, group_id, statement_timeout_s=statement_timeout_s)
        with db_errors("cannot prepare the read-model connection"):
            for t in (_ENTRIES, _OUTCOMES, _LOGS, _DEAD):
                await conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {t.stage} (LIKE {t.table} INCLUDING DEFAULTS)"
                    " ON COMMIT DELETE ROWS"
                )
            # The staging tables are dropped when the session ends, in a transaction that waits for the
            # synchronous standby like any commit (PostgreSQL 15): on a primary that was failed over while frozen,
            # whose standby is gone, that wait never ends, the backend never exits, and the failover manager
            # cannot stop and demote the woken zombie. So the session's own commits are local, and every write
            # transaction of this repository asks for the configured level again (`_durable`).
            level = await conn.fetchval("SELECT current_setting('synchronous_commit')")
            await conn.execute("SET synchronous_commit = local")
        repo = cls(conn, schema, group_id, control_schema)
        repo._commit_level = level if level in _WAITING_LEVELS else None
        await repo._load_months()
        return repo

    @contextlib.asynccontextmanager
    async def _durable(self) -> AsyncIterator[None]:
        """A transaction whose commit waits as the server is configured to (for the synchronous standby)."""
        async with self._conn.transaction():
            if self._commit_level is not None:
                await self._conn.execute(f"SET LOCAL synchronous_commit = {self._commit_level}")
            yield

    async def close(self) -> None:
        """Close the connection; a lost one is just dropped."""
        await postgres.close(self._conn)

    def drop(self) -> None:
        """Drop the connection without a goodbye (the server rolls back what was open)."""
        self._conn.terminate()

    async def _load_months(self) -> None:
        with db_errors("cannot list month partitions"):
            rows = await self._conn.fetch(
                """SELECT p.relname AS parent, c.relname AS child
                     FROM pg_inherits i
                     JOIN pg_class c ON c.oid = i.inhrelid
                     JOIN pg_class p ON p.oid = i.inhparent
                     JOIN pg_namespace n ON n.oid = p.relnamespace
                    WHERE n.nspname = $1 AND p.relname = ANY($2::text[])""",
                self._schema,
                list(_PARTITIONED),
            )
        for r in rows:
            suffix = r["child"].removeprefix(f"{r['parent']}_y")
            if len(suffix) == 7 and suffix[4] == "m":
                self._months.add((r["parent"], date(int(suffix[:4]), int(suffix[5:]), 1)))

    async def ensure_months(self, months: Iterable[tuple[str, date]]) -> int:
        """Create each month partition not known to exist yet (outside any batch transaction); return how many."""
        created = 0
        for parent, month in sorted(set(months) - self._months):
            with db_errors(f"cannot create the {month:%Y-%m} partition of {parent}"):
                async with self._durable():
                    made = await self._conn.fetchval(
                        f"SELECT {self._control}.ensure_month_partition($1, $2, $3)", self._schema, parent, month
                    )
            self._months.add((parent, month))
            created += bool(made)
        return created

    async def load_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Stored next offsets of the given partitions (absent: never projected)."""
        wanted = list(partitions)
        with db_errors("cannot load offsets"):
            rows = await self._conn.fetch(
                """SELECT o.topic, o.partition, o.next_offset
                     FROM projector_offsets o
                     JOIN unnest($2::text[], $3::int[]) AS w(topic, partition)
                       ON o.topic = w.topic AND o.partition = w.partition
                    WHERE o.consumer_group = $1""",
                self._group,
                [t for t, _ in wanted],
                [p for _, p in wanted],
            )
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    async def load_trees(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], TreeState]:
        """Stored Merkle tree states of the given partitions (absent: the empty tree)."""
        wanted = list(partitions)
        with db_errors("cannot load Merkle trees"):
            rows = await self._conn.fetch(
                """SELECT t.topic, t.partition, t.size, t.frontier
                     FROM merkle_trees t
                     JOIN unnest($1::text[], $2::int[]) AS w(topic, partition)
                       ON t.topic = w.topic AND t.partition = w.partition""",
                [t for t, _ in wanted],
                [p for _, p in wanted],
            )
        found = {(r["topic"], r["partition"]): TreeState(r["size"], tuple(r["frontier"])) for r in rows}
        return {key: found.get(key, TreeState(0)) for key in wanted}

    async def producer_keys(self) -> dict[str, "ProducerKey"]:
        """The registry of publishers' keys."""
        with db_errors("cannot read the producer key registry"):
            rows = await self._conn.fetch(
                "SELECT key_id, public_key, sources, tenants, valid_from, valid_until"
                f" FROM {self._control}.producer_keys"
            )
        return {
            r["key_id"]: ProducerKey(
                r["key_id"],
                bytes(r["public_key"]),
                frozenset(r["sources"]),
                None if r["tenants"] is None else frozenset(r["tenants"]),
                r["valid_from"],
                r["valid_until"],
            )
            for r in rows
        }

    async def register_key(self, name: str, key_hash: int, verifier_key: str) -> None:
        """List a signing key (idempotent): every key that ever signed stays listed for verification."""
        with db_errors("cannot register the checkpoint key"):
            async with self._durable():
                await self._conn.execute(
                    f"""INSERT INTO {self._control}.signing_keys (name, key_hash, verifier_key) VALUES ($1, $2, $3)
                        ON CONFLICT DO NOTHING""",
                    name,
                    key_hash,
                    verifier_key,
                )

    async def store_checkpoint(
        self, origin: str, size: int, root_hash: bytes, key_name: str, key_hash: int, note: str
    ) -> None:
        """Keep a signed checkpoint (the same one signed again is the same note: kept once)."""
        with db_errors("cannot store a checkpoint"):
            async with self._durable():
                await self._conn.execute(
                    f"""INSERT INTO {self._control}.checkpoints
                               (origin, tree_size, root_hash, key_name, key_hash, note)
                        VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
                    origin,
                    size,
                    root_hash,
                    key_name,
                    key_hash,
                    note,
                )

    async def last_checkpoints(self, origins: Sequence[str]) -> dict[str, int]:
        """The largest signed tree size of each origin."""
        with db_errors("cannot read checkpoints"):
            rows = await self._conn.fetch(
                f"""SELECT origin, max(tree_size) AS size FROM {self._control}.checkpoints
                     WHERE origin = ANY($1::text[]) GROUP BY origin""",
                list(origins),
            )
        return {r["origin"]: r["size"] for r in rows}

    async def load_skips(self, partitions: Iterable[tuple[str, int]]) -> list[Skip]:
        """Operator skip requests at or after the stored offset of the given partitions."""
        wanted = list(partitions)
        if not wanted:
            return []
        with db_errors("cannot load skip requests"):
            rows = await self._conn.fetch(
                """SELECT s.topic, s.partition, s.kafka_offset, s.kind, s.reason, s.requested_by
                     FROM projector_skips s
                     JOIN unnest($2::text[], $3::int[]) AS w(topic, partition)
                       ON s.topic = w.topic AND s.partition = w.partition
                     LEFT JOIN projector_offsets o
                       ON o.consumer_group = s.consumer_group AND o.topic = s.topic AND o.partition = s.partition
                    WHERE s.consumer_group = $1 AND s.kafka_offset >= coalesce(o.next_offset, 0)
                    ORDER BY s.topic, s.partition, s.kafka_offset""",
                self._group,
                [t for t, _ in wanted],
                [p for _, p in wanted],
            )
        return [Skip(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def write_batch(self, batch: Batch, *, isolate: bool = False) -> WriteResult:
        """Rows, registry claims, blocks and offsets in one transaction; any error rolls all of it back.

        A data error raises RecordDataError; with `isolate` the rows are instead written in halves under
        savepoints until each refused row stands alone, and RecordsRejectedError names them.
        """
        months = {(t.table, _month(r.values[0])) for t in (_ENTRIES, _LOGS) for r in self._rows(batch.rows, t)}
        await self.ensure_months(months)
        rejected: list[Rejection] = []
        with db_errors("batch write failed"):
            async with self._durable():
                await self._pause_fence()
                await self._fence(batch.fences)
                duplicates = await self._claim(batch.rows, rejected)
                if rejected and not isolate:
                    raise RecordsRejectedError(rejected)
                skip = set(duplicates) | {Coordinates(r.topic, r.partition, r.offset) for r in rejected}
                for target in (_ENTRIES, _OUTCOMES, _LOGS, _DEAD):
                    rows = [r for r in self._rows(batch.rows, target) if r.at not in skip]
                    if not rows:
                        continue
                    if isolate:
                        await self._insert_isolating(target, rows, rejected)
                    else:
                        await self._insert(target, rows, truncate=False)
                if rejected:
                    raise RecordsRejectedError(rejected)
                await self._record_blocks(batch.fences, batch.blocks)
                await self._append_trees(batch.trees)
                if duplicates:
                    await self._conn.executemany(
                        """INSERT INTO record_verdicts (topic, partition, kafka_offset, verdict, detail)
                           VALUES ($1, $2, $3, 'duplicate', 'an identical re-send of an event already recorded')
                           ON CONFLICT DO NOTHING""",
                        [(d.topic, d.partition, d.offset) for d in duplicates],
                    )
        return WriteResult(tuple(duplicates))

    @staticmethod
    def _rows(rows: BatchRows, target: _Target) -> list[Row]:
        return {
            _ENTRIES.table: rows.entries,
            _OUTCOMES.table: rows.outcomes,
            _LOGS.table: rows.logs,
            _DEAD.table: rows.dead_letters,
        }[target.table]

    async def _pause_fence(self) -> None:
        """Inside the batch transaction: refuse to commit into a paused read model. The shared lock makes a swap's
        exclusive lock wait for this batch; the row is read after it, so a pause committed before is seen."""
        await self._conn.execute("SELECT pg_advisory_xact_lock_shared($1, hashtext($2))", PAUSE_LOCK, self._schema)
        row = await self._conn.fetchrow(
            f"SELECT paused, reason FROM {self._control}.projector_control WHERE read_model = $1", self._schema
        )
        if row is not None and row["paused"]:
            raise PausedError(self._schema, row["reason"])

    async def _fence(self, fences: Sequence[OffsetFence]) -> None:
        """Move every partition's stored offset in one statement, or raise FencedError for those that moved."""
        claims = [f for f in fences if f.expected is None]
        moves = [f for f in fences if f.expected is not None]
        moved: set[tuple[str, int]] = set()
        if claims:
            rows = await self._conn.fetch(
                """INSERT INTO projector_offsets (consumer_group, topic, partition, next_offset)
                   SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[])
                   ON CONFLICT DO NOTHING RETURNING topic, partition""",
                self._group,
                [f.topic for f in claims],
                [f.partition for f in claims],
                [f.next_offset for f in claims],
            )
            moved |= {(r["topic"], r["partition"]) for r in rows}
        if moves:
            # Only forward: a batch that would move the offset back matches no row and is fenced.
            rows = await self._conn.fetch(
                """UPDATE projector_offsets o SET next_offset = f.next_offset, updated_at = now()
                     FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[])
                          AS f(topic, partition, expected, next_offset)
                    WHERE o.consumer_group = $1 AND o.topic = f.topic AND o.partition = f.partition
                      AND o.next_offset = f.expected AND f.next_offset >= f.expected
                   RETURNING o.topic, o.partition""",
                self._group,
                [f.topic for f in moves],
                [f.partition for f in moves],
                [f.expected for f in moves],
                [f.next_offset for f in moves],
            )
            moved |= {(r["topic"], r["partition"]) for r in rows}
        lost = [(f.topic, f.partition) for f in fences if (f.topic, f.partition) not in moved]
        if lost:
            raise FencedError(lost)

    async def _append_trees(self, appends: Sequence[TreeAppend]) -> None:
        """Leaves, completed nodes and the new frontier; fenced on the tree's size like the offsets."""
        if not appends:
            return
        leaves = [(a.topic, a.partition, *leaf) for a in appends for leaf in a.leaves]
        nodes = [(a.topic, a.partition, *node) for a in appends for node in a.nodes]
        if leaves:
            await self._conn.copy_records_to_table(
                "merkle_leaves",
                records=leaves,
                columns=["topic", "partition", "leaf_index", "kafka_offset", "leaf_hash", "leaf_data"],
            )
        if nodes:
            await self._conn.copy_records_to_table(
                "merkle_nodes", records=nodes, columns=["topic", "partition", "level", "node_index", "hash"]
            )
        lost = []
        for a in appends:
            if a.before.size == 0:
                moved = await self._conn.fetchval(
                    """INSERT INTO merkle_trees AS t (topic, partition, size, frontier) VALUES ($1, $2, $3, $4)
                       ON CONFLICT (topic, partition) DO UPDATE
                          SET size = excluded.size, frontier = excluded.frontier, updated_at = now()
                        WHERE t.size = 0
                       RETURNING 1""",
                    a.topic,
                    a.partition,
                    a.after.size,
                    list(a.after.frontier),
                )
            else:
                moved = await self._conn.fetchval(
                    """UPDATE merkle_trees SET size = $3, frontier = $4, updated_at = now()
                        WHERE topic = $1 AND partition = $2 AND size = $5
                       RETURNING 1""",
                    a.topic,
                    a.partition,
                    a.after.size,
                    list(a.after.frontier),
                    a.before.size,
                )
            if moved is None:
                lost.append((a.topic, a.partition))
        if lost:
            raise FencedError(lost)

    async def _claim(self, rows: BatchRows, rejected: list[Rejection]) -> list[Coordinates]:
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
            for rec in await self._conn.fetch(
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
            for rec in await self._conn.fetch(
                """SELECT audit_id, tenant_id, entity_model, entity_id, action,
                          kafka_topic, kafka_partition, kafka_offset
                     FROM audit_ids WHERE audit_id = ANY($1::uuid[])""",
                others,
            ):
                at = Coordinates(rec["kafka_topic"], rec["kafka_partition"], rec["kafka_offset"])
                claims[rec["audit_id"]] = (rec["tenant_id"], rec["entity_model"], rec["entity_id"], rec["action"], at)
        stored = await self._stored_digests(events, claims)
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
                        f"a different {claim.kind} event for audit id {claim.audit_id} is already recorded at "
                        f"{earlier[1]}",
                    )
                )
        return duplicates

    async def _stored_digests(
        self, events: list[Row], claims: dict[UUID, tuple[str, str, str, str, Coordinates]]
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
            for rec in await self._conn.fetch(
                f"""SELECT audit_id, content_digest, kafka_topic, kafka_partition, kafka_offset
                      FROM {table} WHERE audit_id = ANY($1::uuid[])""",
                wanted,
            ):
                at = Coordinates(rec["kafka_topic"], rec["kafka_partition"], rec["kafka_offset"])
                found[(kind, rec["audit_id"])] = (rec["content_digest"] or b"", at)
        return found

    async def _insert(self, target: _Target, rows: list[Row], *, truncate: bool = True) -> None:
        # COPY has no ON CONFLICT: copy into the session's staging table, then insert what is new.
        await self._conn.copy_records_to_table(
            target.stage, records=[r.values for r in rows], columns=list(target.columns)
        )
        columns = ", ".join(target.columns)
        insert = (
            f"INSERT INTO {target.table} ({columns}) SELECT {columns} FROM {target.stage}"
            f" ON CONFLICT {target.conflict} DO NOTHING"
        )
        # With a rollup, only rows actually inserted (RETURNING) are counted, in the same statement.
        await self._conn.execute(insert if target.rollup is None else f"WITH ins AS ({insert} {target.rollup}")
        if truncate:  # the next chunk of the same table is staged in this transaction
            await self._conn.execute(f"TRUNCATE {target.stage}")

    async def _insert_isolating(self, target: _Target, rows: list[Row], rejected: list[Rejection]) -> None:
        """Insert under a savepoint; on a data error split in halves until the refused rows stand alone."""
        try:
            async with self._conn.transaction():
                await self._insert(target, rows)
        except Exception as e:
            if not is_record_data_error(e):
                raise
            if len(rows) == 1:
                at = rows[0].at
                state = getattr(e, "sqlstate", None) or type(e).__name__
                rejected.append(Rejection(at.topic, at.partition, at.offset, "database_refused", f"[{state}] {e}"))
                return
            half = len(rows) // 2
            await self._insert_isolating(target, rows[:half], rejected)
            await self._insert_isolating(target, rows[half:], rejected)

    async def _record_blocks(self, fences: Sequence[OffsetFence], blocks: Sequence[Block]) -> None:
        # A partition that moved past its block (after an upgrade or a skip) is unblocked.
        if fences:
            await self._conn.execute(
                """DELETE FROM projector_blocks b
                    USING unnest($2::text[], $3::int[], $4::bigint[]) AS f(topic, partition, next_offset)
                    WHERE b.consumer_group = $1 AND b.topic = f.topic AND b.partition = f.partition
                      AND b.kafka_offset < f.next_offset""",
                self._group,
                [f.topic for f in fences],
                [f.partition for f in fences],
                [f.next_offset for f in fences],
            )
        for b in blocks:
            await self._upsert_block(b)

    async def record_block(self, block: Block) -> None:
        """Record a block on its own (offset out of range, database failure), replacing an older one."""
        with db_errors("cannot record a blocked partition"):
            async with self._durable():
                await self._upsert_block(block)

    async def _upsert_block(self, b: Block) -> None:
        await self._conn.execute(
            "DELETE FROM projector_blocks WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
            self._group,
            b.topic,
            b.partition,
        )
        await self._conn.execute(
            """INSERT INTO projector_blocks (consumer_group, topic, partition, kafka_offset, event_type,
                                             schema_version, reason, detail)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            self._group,
            b.topic,
            b.partition,
            b.offset,
            b.event_type,
            b.schema_version,
            b.reason,
            b.detail,
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


PAUSE_LOCK: Final = 0x41555053
"""Advisory lock namespace of the pause fence (the key is the read model's schema name, hashed)."""

_COMPACT_LOCK: Final = (0x41554454, 12)
"""Advisory lock taken by the rollup compaction, so one projector of a fleet compacts at a time."""

_DAILY: Final = {
    "audit_rollups_daily": "tenant_id, action, entity_model, actor_type, status",
    "audit_rollups_daily_actions": "tenant_id, action, status",
    "audit_rollups_daily_all": "action, entity_model, actor_type, status",
    "audit_rollups_daily_all_actions": "action, status",
    "audit_rollups_daily_all_models": "entity_model, actor_type, status",
}
_HOURLY: Final = {
    "audit_rollups_hourly_all": "action, entity_model, actor_type, status",
    "audit_rollups_hourly_all_actions": "action, status",
    "audit_rollups_hourly_all_models": "entity_model, actor_type, status",
}


async def compact_rollups(conn: asyncpg.Connection, now: datetime) -> int | None:
    """Fold the hourly rollups of changed closed hours (before `now`'s hour) into the all-tenants hourly table, and
    of changed closed days (before `now`'s day) into the daily tables, a transaction per day; return how many
    days were touched, or None when another process holds the compaction lock.

    A marker is read before the hours it names are summed and deleted only if unchanged since, so an hourly
    change that races the fold leaves its marker and readers keep summing those hourly rows.
    """
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    with db_errors("cannot compact the rollups"):
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *_COMPACT_LOCK):
            return None
        try:
            hour_days = await conn.fetch(
                """SELECT DISTINCT date_trunc('day', bucket, 'UTC') AS day FROM audit_rollup_hour_changes
                    WHERE bucket < $1 ORDER BY 1""",
                hour,
            )
            for r in hour_days:
                await _fold_hours(conn, r["day"], min(r["day"] + timedelta(days=1), hour))
            days = await conn.fetch("SELECT DISTINCT day FROM audit_rollup_changes WHERE day < $1 ORDER BY 1", day)
            for r in days:
                await _fold_day(conn, r["day"])
            return len({r["day"] for r in [*hour_days, *days]})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", *_COMPACT_LOCK)


async def _fold_hours(conn: asyncpg.Connection, since: datetime, until: datetime) -> None:
    """Recount the marked hours in [since, until) into the all-tenants hourly tables."""
    async with conn.transaction():
        marks = await conn.fetch(
            """SELECT bucket, tenant_id, kafka_partition, changes FROM audit_rollup_hour_changes
                WHERE bucket >= $1 AND bucket < $2""",
            since,
            until,
        )
        hours = sorted({m["bucket"] for m in marks})
        for table, columns in _HOURLY.items():
            await conn.execute(f"DELETE FROM {table} WHERE bucket = ANY($1::timestamptz[])", hours)
            await conn.execute(
                f"""INSERT INTO {table} (bucket, {columns}, entries)
                    SELECT bucket, {columns}, sum(entries) FROM audit_rollups
                     WHERE bucket = ANY($1::timestamptz[])
                     GROUP BY bucket, {columns} HAVING sum(entries) > 0""",
                hours,
            )
        await conn.execute(
            """DELETE FROM audit_rollup_hour_changes c
                USING unnest($1::timestamptz[], $2::text[], $3::int[], $4::bigint[]) AS m(bucket, tenant_id, part, n)
                WHERE c.bucket = m.bucket AND c.tenant_id = m.tenant_id AND c.kafka_partition = m.part
                  AND c.changes = m.n""",
            *_columns(marks, "bucket", "tenant_id", "kafka_partition", "changes"),
        )


async def _fold_day(conn: asyncpg.Connection, day: datetime) -> None:
    """Recount one marked day into the daily tables."""
    async with conn.transaction():
        marks = await conn.fetch(
            "SELECT tenant_id, kafka_partition, changes FROM audit_rollup_changes WHERE day = $1", day
        )
        for table, columns in _DAILY.items():
            await conn.execute(f"DELETE FROM {table} WHERE bucket = $1", day)
            await conn.execute(
                f"""INSERT INTO {table} (bucket, {columns}, entries)
                    SELECT $1::timestamptz, {columns}, sum(entries) FROM audit_rollups
                     WHERE bucket >= $1::timestamptz AND bucket < $1::timestamptz + interval '1 day'
                     GROUP BY {columns} HAVING sum(entries) > 0""",
                day,
            )
        await conn.execute(
            """DELETE FROM audit_rollup_changes c
                USING unnest($2::text[], $3::int[], $4::bigint[]) AS m(tenant_id, part, changes)
                WHERE c.day = $1 AND c.tenant_id = m.tenant_id AND c.kafka_partition = m.part
                  AND c.changes = m.changes""",
            day,
            *_columns(marks, "tenant_id", "kafka_partition", "changes"),
        )


async def pause_state(conn: asyncpg.Connection, control_schema: str, read_model: str) -> tuple[bool, str | None]:
    """Whether the projectors of `read_model` are paused, and why."""
    control = quoted(control_schema)
    with db_errors("cannot read the projector control row"):
        row = await conn.fetchrow(
            f"SELECT paused, reason FROM {control}.projector_control WHERE read_model = $1", read_model
        )
    return (bool(row["paused"]), row["reason"]) if row is not None else (False, None)


def _columns(records: list[asyncpg.Record], *names: str) -> list[list[Any]]:
    return [[r[n] for r in records] for n in names]


def _month(value: datetime) -> date:
    utc = value.astimezone(UTC)
    return date(utc.year, utc.month, 1)


__all__ = [
    "PAUSE_LOCK",
    "SESSION_SETTINGS",
    "Batch",
    "Block",
    "OffsetFence",
    "ProjectionRepository",
    "RecordDataError",
    "Skip",
    "TreeAppend",
    "TreeState",
    "WriteResult",
    "compact_rollups",
    "pause_state",
    "quoted",
]
