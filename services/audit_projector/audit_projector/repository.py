"""All of the projector's SQL: staged batch writes, fenced offsets, partition blocks."""

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from audit_projector.errors import DependencyUnavailableError, FencedError, ProjectorError
from audit_projector.rows import DEAD_LETTER_COLUMNS, ENTRY_COLUMNS, LOG_COLUMNS, OUTCOME_COLUMNS, BatchRows

# (table, staging table, columns, conflict target)
_TARGETS: Final = (
    ("audit_entries", "stage_audit_entries", ENTRY_COLUMNS, "(occurred_at, audit_id)"),
    ("audit_outcomes", "stage_audit_outcomes", OUTCOME_COLUMNS, "(audit_id)"),
    ("execution_logs", "stage_execution_logs", LOG_COLUMNS, "(logged_at, log_id)"),
    (
        "dead_letters",
        "stage_dead_letters",
        DEAD_LETTER_COLUMNS,
        "(kafka_topic, kafka_partition, kafka_offset)",
    ),
)


_CONNECTION_ERRORS: Final = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.CannotConnectNowError,
)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Driver errors become ProjectorError; a lost or refused connection is the retriable kind."""
    try:
        yield
    except FencedError:
        raise
    except _CONNECTION_ERRORS as e:
        raise DependencyUnavailableError(f"{what}: database connection lost: {e}") from e
    except asyncpg.PostgresError as e:
        raise ProjectorError(f"{what}: {e}") from e


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
    """A partition stopped at an event newer than this projector understands."""

    topic: str
    partition: int
    offset: int
    event_type: str
    schema_version: str | None


class ProjectionRepository:
    """Writes batches over one dedicated connection, whose session holds the staging tables."""

    def __init__(self, conn: asyncpg.Connection, group_id: str) -> None:
        self._conn = conn
        self._group = group_id

    @classmethod
    async def connect(cls, dsn: str, schema: str, group_id: str) -> "ProjectionRepository":
        """Open the connection with `schema` first on the search path and create the staging tables."""
        with _translated("cannot open the read-model connection"):
            conn = await asyncpg.connect(
                dsn, server_settings={"search_path": schema, "application_name": f"audit-projector/{group_id}"}
            )
            for table, stage, _, _ in _TARGETS:
                await conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
        return cls(conn, group_id)

    async def close(self) -> None:
        """Close the connection; a lost one is just dropped."""
        if self._conn.is_closed():
            return
        try:
            await asyncio.wait_for(self._conn.close(), 5)
        except (*_CONNECTION_ERRORS, TimeoutError):
            self._conn.terminate()

    async def ensure_partitions(self, months_ahead: int) -> int:
        """Create the coming months' partitions (through the owner's SECURITY DEFINER function)."""
        with _translated("cannot create month partitions"):
            created: int = await self._conn.fetchval("SELECT ensure_month_partitions($1, 1)", months_ahead)
        return created

    async def load_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Stored next offsets of the given partitions (absent: never projected)."""
        wanted = list(partitions)
        with _translated("cannot load offsets"):
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

    async def write_batch(self, rows: BatchRows, fences: Sequence[OffsetFence], blocks: Sequence[Block]) -> None:
        """Rows, dead letters, blocks and offsets in one transaction; FencedError rolls all of it back."""
        with _translated("batch write failed"):
            async with self._conn.transaction():
                await self._fence(fences)
                for (table, stage, columns, conflict), records in zip(
                    _TARGETS, (rows.entries, rows.outcomes, rows.logs, rows.dead_letters), strict=True
                ):
                    if records:
                        await self._stage_and_insert(table, stage, columns, conflict, records)
                await self._record_blocks(fences, blocks)

    async def _fence(self, fences: Sequence[OffsetFence]) -> None:
        lost = []
        for f in fences:
            if f.expected is None:
                moved = await self._conn.fetchval(
                    """INSERT INTO projector_offsets (consumer_group, topic, partition, next_offset)
                       VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1""",
                    self._group,
                    f.topic,
                    f.partition,
                    f.next_offset,
                )
            else:
                moved = await self._conn.fetchval(
                    """UPDATE projector_offsets SET next_offset = $5, updated_at = now()
                        WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset = $4
                       RETURNING 1""",
                    self._group,
                    f.topic,
                    f.partition,
                    f.expected,
                    f.next_offset,
                )
            if moved is None:
                lost.append((f.topic, f.partition))
        if lost:
            raise FencedError(lost)

    async def _stage_and_insert(
        self, table: str, stage: str, columns: Sequence[str], conflict: str, records: list[tuple[Any, ...]]
    ) -> None:
        # COPY has no ON CONFLICT: copy into the session's staging table, then insert what is new.
        await self._conn.copy_records_to_table(stage, records=records, columns=list(columns))
        column_list = ", ".join(columns)
        await self._conn.execute(
            f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM {stage} ON CONFLICT {conflict} DO NOTHING"
        )

    async def _record_blocks(self, fences: Sequence[OffsetFence], blocks: Sequence[Block]) -> None:
        # A partition that moved past its block (after an upgrade) is unblocked.
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
            await self._conn.execute(
                "DELETE FROM projector_blocks WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
                self._group,
                b.topic,
                b.partition,
            )
            await self._conn.execute(
                """INSERT INTO projector_blocks (consumer_group, topic, partition, kafka_offset, event_type,
                                                 schema_version) VALUES ($1, $2, $3, $4, $5, $6)""",
                self._group,
                b.topic,
                b.partition,
                b.offset,
                b.event_type,
                b.schema_version,
            )
