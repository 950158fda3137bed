"""Projector throughput against the floor it cannot beat: a raw COPY of the same rows.

Both run in one process against the local stack (`deploy/local/stack.sh up`), in fresh schemas:
  baseline  — the rows the projector would write, COPY'd straight into `audit_entries`;
  projector — the same number of events read from Kafka, decoded, staged and inserted with their
              offsets, batch by batch, until the stored offsets reach the topic's end.
Prints events/s for each and the ratio. Usage: `python bench/projector_vs_copy.py [--events N]`.
"""

import argparse
import asyncio
import os
import time
from uuid import uuid4

import asyncpg
from tests.factories import action_event, publish_events

from audit_projector import logs
from audit_projector.config import Settings
from audit_projector.migrations import migrate
from audit_projector.replay import catch_up
from audit_projector.rows import ENTRY_COLUMNS, Coordinates, entry_row
from audit_projector.state import ProjectorState
from audit_projector.topics import ensure_topics

OWNER = os.environ.get("AUDIT_OWNER_DSN", "postgresql://audit_owner:audit_owner@127.0.0.1:15432/audit")
PROJECTOR = os.environ.get(
    "AUDIT_PROJECTOR_DATABASE_URL", "postgresql://audit_projector:audit_projector@127.0.0.1:15432/audit"
)
BOOTSTRAP = os.environ.get("AUDIT_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


def bench_settings(name: str) -> Settings:
    """Projector settings on the local stack under a bench's own `name`: schemas `<name>_a` and `<name>_control`,
    group `<name>-group`, topics `<name>.*`, no rollup compaction."""
    return Settings(
        environment="development",  # the local stack has one broker
        bootstrap_servers=BOOTSTRAP,
        database_url=PROJECTOR,
        db_schema=f"{name}_a",
        control_schema=f"{name}_control",
        group_id=f"{name}-group",
        audit_topic=f"{name}.audit",
        execution_log_topic=f"{name}.logs",
        dead_letter_topic=f"{name}.dlq",
        checkpoint_topic=f"{name}.checkpoints",
        rollup_compaction_interval_s=0,
    )


async def drop_bench_schemas(conn: asyncpg.Connection, name: str) -> None:
    """Every schema a bench made under `name` (`<name>_a`, `_b`, `_control`, retired ones, ...)."""
    for schema in await conn.fetch(
        "SELECT nspname FROM pg_namespace WHERE left(nspname, length($1) + 1) = $1 || '_'", name
    ):
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema[0]}" CASCADE')


async def baseline(events: int) -> float:
    """Seconds to COPY `events` prepared rows into a fresh audit_entries."""
    schema = f"bench_copy_{uuid4().hex[:8]}"
    await migrate(OWNER, schema)
    rows = [entry_row(action_event(f"e-{i % 500}"), Coordinates("bench", 0, i)).values for i in range(events)]
    conn = await asyncpg.connect(OWNER, server_settings={"search_path": schema})
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table("audit_entries", records=rows, columns=list(ENTRY_COLUMNS))
        return time.perf_counter() - started
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def projector(events: int, batch: int, merkle: bool = True) -> float:
    """Seconds for the projector to take `events` already in Kafka into a fresh schema."""
    name = f"bench_{uuid4().hex[:8]}"
    settings = bench_settings(name).model_copy(update={"batch_max_records": batch, "merkle_enabled": merkle})
    await migrate(OWNER, settings.db_schema, control_schema=settings.control_schema)
    await ensure_topics(BOOTSTRAP, [*settings.topics, settings.dead_letter_topic], settings.partitions)
    await publish_events(BOOTSTRAP, settings.audit_topic, events, entities=500)
    elapsed = (await catch_up(settings, ProjectorState(), timeout_s=600)).seconds  # from the first poll on
    conn = await asyncpg.connect(OWNER)
    try:
        count = await conn.fetchval(f'SELECT count(*) FROM "{settings.db_schema}".audit_entries')
        await drop_bench_schemas(conn, name)
    finally:
        await conn.close()
    assert count == events, f"projected {count} of {events}"
    return elapsed


async def main() -> None:
    logs.configure("WARNING")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    copy_s = await baseline(args.events)
    plain_s = await projector(args.events, args.batch, merkle=False)
    tree_s = await projector(args.events, args.batch, merkle=True)
    print(f"events:                    {args.events}")
    print(f"raw COPY (baseline):       {copy_s:7.2f} s  {args.events / copy_s:10.0f} rows/s")
    print(f"projector, Merkle tree off: {plain_s:6.2f} s  {args.events / plain_s:10.0f} events/s")
    print(f"projector, Merkle tree on:  {tree_s:6.2f} s  {args.events / tree_s:10.0f} events/s")
    print(f"projector (tree on) / COPY: {copy_s / tree_s:7.2%} of raw COPY throughput")
    print(f"tree on / tree off:         {plain_s / tree_s:7.2%} of the throughput without the tree")


if __name__ == "__main__":
    asyncio.run(main())
