"""Rebuild figures on this machine: replay rate for N events (default 1 M), the swap's pause, archive size per
million entries. Against the local stack (`deploy/local/stack.sh up`), in fresh topics and schemas.

  1. publish N action events to a fresh topic;
  2. replay them into schema A (the "live" model here) and report records/s — against the baseline of a
     second replay into schema B, which is then swapped in for A (no projector running, so the pause is the
     hold itself: catch-up, the tail comparison and the rename);
  3. write each partition of B into archives (signed by a bench key) and report bytes per million entries and
     the offline verification rate.

Usage: `python -m bench.rebuild_figures [--events N]`. Cleans up its schemas and archive files.
"""

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from uuid import uuid4

import asyncpg
from tests.factories import publish_events

from audit_projector import logs
from audit_projector.migrations import migrate
from audit_projector.replay import replay
from audit_projector.swap import swap
from audit_projector.topics import ensure_topics
from audit_schemas import archive, merkle
from audit_schemas.checkpoint import Checkpoint, NoteSigner
from bench.projector_vs_copy import BOOTSTRAP, OWNER, bench_settings, drop_bench_schemas


async def run(events: int) -> None:
    name = f"bench_{uuid4().hex[:8]}"
    live = bench_settings(name).model_copy(update={"kafka_group_id": f"{name}-a"})
    shadow = live.model_copy(update={"db_schema": f"{name}_b", "kafka_group_id": f"{name}-b"})
    await migrate(OWNER, live.db_schema, control_schema=live.control_schema)
    await ensure_topics(BOOTSTRAP, [*live.topics, live.dead_letter_topic], live.partitions)
    started = time.perf_counter()
    await publish_events(BOOTSTRAP, live.audit_topic, events, entities=5000)
    print(f"published {events:,} events in {time.perf_counter() - started:.0f} s", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="audit-archives-"))
    conn = await asyncpg.connect(OWNER)
    try:
        first = await replay(live, OWNER, timeout_s=3600)
        print(f"replay A: {first.records:,} records in {first.seconds:.1f} s = {first.per_second:,.0f} records/s")
        second = await replay(shadow, OWNER, timeout_s=3600)
        print(f"replay B: {second.records:,} records in {second.seconds:.1f} s = {second.per_second:,.0f} records/s")
        swapped = await swap(live, shadow, OWNER, timeout_s=600)
        print(f"swap B for A: {swapped.rows_verified:,} rows verified, paused {swapped.paused_s * 1000:.0f} ms = "
              f"{swapped.paused_s / second.seconds:.2%} of the rebuild's duration")  # fmt: skip
        size, seconds = await _archives(conn, live.db_schema, live.log_name, folder)
        per_million = size / events * 1_000_000
        print(f"archives: {size:,} bytes for {events:,} entries = {per_million / 2**20:,.1f} MiB per million")
        print(f"offline verification: {events / seconds:,.0f} leaves/s")
    finally:
        await drop_bench_schemas(conn, name)
        await conn.close()
        shutil.rmtree(folder, ignore_errors=True)


async def _archives(conn: asyncpg.Connection, schema: str, log_name: str, folder: Path) -> tuple[int, float]:
    """Each partition's leaves as one archive, signed by a bench key; total bytes and offline-verify seconds."""
    signer, _ = NoteSigner.generate(log_name)
    total, verify_s = 0, 0.0
    for tree in await conn.fetch(f'SELECT topic, partition, size, frontier FROM "{schema}".merkle_trees'):
        topic, partition, size = tree["topic"], tree["partition"], tree["size"]
        origin = f"{log_name}/{topic}/{partition}"
        note = signer.sign(Checkpoint(origin, size, merkle.frontier_root(list(tree["frontier"]))).body())
        bounds = await conn.fetchrow(
            f'SELECT min(kafka_offset), max(kafka_offset) FROM "{schema}".merkle_leaves WHERE topic = $1 '
            "AND partition = $2",
            topic,
            partition,
        )
        assert bounds is not None
        header = archive.ArchiveHeader(origin, topic, partition, 0, size, bounds[0], bounds[1] + 1, (), note)
        path = folder / f"{partition}.ndjson.gz"
        with path.open("wb") as out:
            writer = archive.Writer(out, header)
            async with conn.transaction():
                async for r in conn.cursor(
                    f'SELECT leaf_index, kafka_offset, leaf_data FROM "{schema}".merkle_leaves '
                    "WHERE topic = $1 AND partition = $2 ORDER BY leaf_index",
                    topic,
                    partition,
                    prefetch=5000,
                ):
                    writer.add(r[0], r[1], bytes(r[2]))
            nodes = await conn.fetch(
                f'SELECT level, node_index, hash FROM "{schema}".merkle_nodes WHERE topic = $1 AND partition = $2',
                topic,
                partition,
            )
            writer.finish([(n[0], n[1], bytes(n[2])) for n in nodes])
        total += path.stat().st_size
        started = time.perf_counter()
        archive.verify(path, [signer.verifier_key])
        verify_s += time.perf_counter() - started
    return total, verify_s


def main() -> None:
    logs.configure("WARNING")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    asyncio.run(run(args.events))


if __name__ == "__main__":
    main()
