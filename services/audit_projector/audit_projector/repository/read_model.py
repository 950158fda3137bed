"""The read model's tables — entries, outcomes, execution logs, dead letters — and the rollups counted in the same
statements: each batch is COPYed into a session staging table, then inserted where new."""

from dataclasses import dataclass
from typing import Final

import asyncpg

from audit_projector.errors import Rejection, is_record_data_error
from audit_projector.rows import DEAD_LETTER_COLUMNS, ENTRY_COLUMNS, LOG_COLUMNS, OUTCOME_COLUMNS, BatchRows, Row


@dataclass(frozen=True, slots=True)
class Target:
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

ENTRIES: Final = Target(
    "audit_entries",
    "stage_audit_entries",
    ENTRY_COLUMNS,
    "(occurred_at, audit_id)",
    "RETURNING audit_id, occurred_at, tenant_id, action, entity_model, actor_type, kafka_partition)" + _ENTRY_ROLLUP,
)
OUTCOMES: Final = Target(
    "audit_outcomes",
    "stage_audit_outcomes",
    OUTCOME_COLUMNS,
    "(audit_id)",
    "RETURNING audit_id, status)" + _OUTCOME_ROLLUP,
)
LOGS: Final = Target("execution_logs", "stage_execution_logs", LOG_COLUMNS, "(logged_at, log_id)")
DEAD: Final = Target(
    "dead_letters", "stage_dead_letters", DEAD_LETTER_COLUMNS, "(kafka_topic, kafka_partition, kafka_offset)"
)
PARTITIONED: Final = {"audit_entries": ENTRIES, "execution_logs": LOGS}
"""The tables partitioned by month (the first column of their rows is the timestamp that picks the month)."""
TARGETS: Final = (ENTRIES, OUTCOMES, LOGS, DEAD)
"""In the order a batch writes them."""


async def create_stages(conn: asyncpg.Connection) -> None:
    """The session's staging tables, emptied at each commit."""
    for t in TARGETS:
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {t.stage} (LIKE {t.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )


def rows_of(rows: BatchRows, target: Target) -> list[Row]:
    """A batch's rows for one table."""
    return {
        ENTRIES.table: rows.entries,
        OUTCOMES.table: rows.outcomes,
        LOGS.table: rows.logs,
        DEAD.table: rows.dead_letters,
    }[target.table]


def insert_statement(target: Target) -> str:
    """The statement moving the staged rows into `target` where new, with its rollup when it has one (only rows
    actually inserted, RETURNING, are counted, in the same statement)."""
    columns = ", ".join(target.columns)
    statement = (
        f"INSERT INTO {target.table} ({columns}) SELECT {columns} FROM {target.stage}"
        f" ON CONFLICT {target.conflict} DO NOTHING"
    )
    return statement if target.rollup is None else f"WITH ins AS ({statement} {target.rollup}"


BY_KEY: Final = "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
"""Sent with each staged insert, for the rest of its batch's transaction, whose statements all meet a batch's rows
with the model by key: a lookup per row, never a join to a scan of a whole table. The planner chose such
scans from estimates of the staging tables (never analysed) and of young tables, and they grew with the model:
each outcome batch read all of `audit_entries` (and each start batch all of `audit_outcomes`), so the work per batch
grew with the history."""


async def insert(conn: asyncpg.Connection, target: Target, rows: list[Row], *, truncate: bool = True) -> None:
    """COPY has no ON CONFLICT: copy into the session's staging table, then insert what is new."""
    await conn.copy_records_to_table(target.stage, records=[r.values for r in rows], columns=list(target.columns))
    await conn.execute(f"{BY_KEY}; {insert_statement(target)}")  # one round trip: the simple query protocol
    if truncate:  # the next chunk of the same table is staged in this transaction
        await conn.execute(f"TRUNCATE {target.stage}")


async def insert_isolating(
    conn: asyncpg.Connection, target: Target, rows: list[Row], rejected: list[Rejection]
) -> None:
    """Insert under a savepoint; on a data error split in halves until the refused rows stand alone."""
    try:
        async with conn.transaction():
            await insert(conn, target, rows)
    except Exception as e:
        if not is_record_data_error(e):
            raise
        if len(rows) == 1:
            at = rows[0].at
            state = getattr(e, "sqlstate", None) or type(e).__name__
            rejected.append(Rejection(at.topic, at.partition, at.offset, "database_refused", f"[{state}] {e}"))
            return
        half = len(rows) // 2
        await insert_isolating(conn, target, rows[:half], rejected)
        await insert_isolating(conn, target, rows[half:], rejected)
