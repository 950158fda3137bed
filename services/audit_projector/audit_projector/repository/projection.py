"""The projector's write connection: one batch — rows, registry claims, tree appends, blocks and offsets — in one
transaction, over a session that holds the staging tables; each table family's SQL lives in its own module."""

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import date

import asyncpg

from audit_projector.errors import RecordsRejectedError, Rejection, db_errors
from audit_projector.repository import (
    blocks,
    offsets,
    partitions,
    read_model,
    registry,
    signatures,
    trees,
)
from audit_projector.repository.records import Batch, Block, ProducerKey, Skip, TreeState, WriteResult
from audit_projector.repository.session import WAITING_LEVELS, open_session, quoted
from audit_projector.rows import Coordinates
from audit_schemas import postgres


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
            await read_model.create_stages(conn)
            # The staging tables are dropped when the session ends, in a transaction that waits for the
            # synchronous standby like any commit (PostgreSQL 15): on a primary that was failed over while frozen,
            # whose standby is gone, that wait never ends, the backend never exits, and the failover manager
            # cannot stop and demote the woken zombie. So the session's own commits are local, and every write
            # transaction of this repository asks for the configured level again (`_durable`).
            level = await conn.fetchval("SELECT current_setting('synchronous_commit')")
            await conn.execute("SET synchronous_commit = local")
        repo = cls(conn, schema, group_id, control_schema)
        repo._commit_level = level if level in WAITING_LEVELS else None
        with db_errors("cannot list month partitions"):
            repo._months = await partitions.stored_months(conn, schema)
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

    async def ensure_months(self, months: Iterable[tuple[str, date]]) -> int:
        """Create each month partition not known to exist yet (outside any batch transaction); return how many."""
        created = 0
        for parent, month in sorted(set(months) - self._months):
            with db_errors(f"cannot create the {month:%Y-%m} partition of {parent}"):
                async with self._durable():
                    made = await partitions.ensure_month(self._conn, self._control, self._schema, parent, month)
            self._months.add((parent, month))
            created += made
        return created

    async def load_offsets(self, wanted: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Stored next offsets of the given partitions (absent: never projected)."""
        with db_errors("cannot load offsets"):
            return await offsets.load_offsets(self._conn, self._group, wanted)

    async def load_trees(self, wanted: Iterable[tuple[str, int]]) -> dict[tuple[str, int], TreeState]:
        """Stored Merkle tree states of the given partitions (absent: the empty tree)."""
        with db_errors("cannot load Merkle trees"):
            return await trees.load_trees(self._conn, wanted)

    async def load_skips(self, wanted: Iterable[tuple[str, int]]) -> list[Skip]:
        """Operator skip requests at or after the stored offset of the given partitions."""
        with db_errors("cannot load skip requests"):
            return await blocks.load_skips(self._conn, self._group, wanted)

    async def producer_keys(self) -> dict[str, ProducerKey]:
        """The registry of publishers' keys."""
        with db_errors("cannot read the producer key registry"):
            return await signatures.producer_keys(self._conn, self._control)

    async def register_key(self, name: str, key_hash: int, verifier_key: str) -> None:
        """List a signing key (idempotent): every key that ever signed stays listed for verification."""
        with db_errors("cannot register the checkpoint key"):
            async with self._durable():
                await signatures.register_key(self._conn, self._control, name, key_hash, verifier_key)

    async def store_checkpoint(
        self, origin: str, size: int, root_hash: bytes, key_name: str, key_hash: int, note: str
    ) -> None:
        """Keep a signed checkpoint (the same one signed again is the same note: kept once)."""
        with db_errors("cannot store a checkpoint"):
            async with self._durable():
                await signatures.store_checkpoint(
                    self._conn, self._control, origin, size, root_hash, (key_name, key_hash), note
                )

    async def last_checkpoints(self, origins: Sequence[str]) -> dict[str, int]:
        """The largest signed tree size of each origin."""
        with db_errors("cannot read checkpoints"):
            return await signatures.last_checkpoints(self._conn, self._control, origins)

    async def record_block(self, block: Block) -> None:
        """Record a block on its own (offset out of range, database failure), replacing an older one."""
        with db_errors("cannot record a blocked partition"):
            async with self._durable():
                await blocks.upsert_block(self._conn, self._group, block)

    async def write_batch(self, batch: Batch, *, isolate: bool = False) -> WriteResult:
        """Rows, registry claims, blocks and offsets in one transaction; any error rolls all of it back.

        A data error raises RecordDataError; with `isolate` the rows are instead written in halves under
        savepoints until each refused row stands alone, and RecordsRejectedError names them.
        """
        months = {
            (t.table, partitions.month_of(r.values[0]))
            for t in read_model.PARTITIONED.values()
            for r in read_model.rows_of(batch.rows, t)
        }
        await self.ensure_months(months)
        rejected: list[Rejection] = []
        with db_errors("batch write failed"):
            async with self._durable():
                await offsets.pause_fence(self._conn, self._control, self._schema)
                await offsets.fence(self._conn, self._group, batch.fences)
                duplicates = await registry.claim(self._conn, batch.rows, rejected)
                if rejected and not isolate:
                    raise RecordsRejectedError(rejected)
                skip = set(duplicates) | {Coordinates(r.topic, r.partition, r.offset) for r in rejected}
                for target in read_model.TARGETS:
                    rows = [r for r in read_model.rows_of(batch.rows, target) if r.at not in skip]
                    if not rows:
                        continue
                    if isolate:
                        await read_model.insert_isolating(self._conn, target, rows, rejected)
                    else:
                        await read_model.insert(self._conn, target, rows, truncate=False)
                if rejected:
                    raise RecordsRejectedError(rejected)
                await blocks.record_blocks(self._conn, self._group, batch.fences, batch.blocks)
                await trees.append_trees(self._conn, batch.trees)
                if duplicates:
                    await registry.record_duplicates(self._conn, duplicates)
        return WriteResult(tuple(duplicates))
