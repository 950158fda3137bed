"""Retention cut by the log, not the calendar: per partition, the leaves up to a signed checkpoint older than the
retention age go into a verified archive file, then their rows leave PostgreSQL."""

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import structlog

from audit_projector.errors import ProjectorError, db_errors
from audit_schemas import archive

log = structlog.get_logger(__name__)


class ArchivingError(ProjectorError):
    """An archive could not be written or did not verify: nothing was deleted."""


@dataclass(frozen=True, slots=True)
class Archived:
    """One archive written and its rows deleted."""

    topic: str
    partition: int
    first_leaf: int
    end_leaf: int
    path: Path
    bytes: int
    rows_deleted: int


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def archive_partitions(
    conn: asyncpg.Connection,
    schema: str,
    control_schema: str,
    log_name: str,
    directory: Path,
    older_than: timedelta,
    keys: list[str],
) -> list[Archived]:
    """Archive every partition of `schema` up to its newest signed checkpoint older than `older_than`; the
    connection is the owner's. Each file is verified offline (by `keys`) before its rows are deleted, and the
    deletion and the archive's registration commit together."""
    control = _quote(control_schema)
    done: list[Archived] = []
    with db_errors("cannot list the trees"):
        trees = await conn.fetch(f"SELECT topic, partition FROM {_quote(schema)}.merkle_trees ORDER BY 1, 2")
    for tree in trees:
        topic, partition = tree["topic"], tree["partition"]
        origin = f"{log_name}/{topic}/{partition}"
        with db_errors("cannot read the archives and checkpoints"):
            last = await conn.fetchrow(
                f"""SELECT end_leaf, end_frontier FROM {control}.archives WHERE topic = $1 AND partition = $2
                     ORDER BY end_leaf DESC LIMIT 1""",
                topic,
                partition,
            )
            first = last["end_leaf"] if last else 0
            checkpoint = await conn.fetchrow(
                f"""SELECT tree_size, root_hash, note FROM {control}.checkpoints
                     WHERE origin = $1 AND signed_at < now() - $2::interval AND tree_size > $3
                     ORDER BY tree_size DESC LIMIT 1""",
                origin,
                older_than,
                first,
            )
        if checkpoint is None:
            continue
        start = tuple(last["end_frontier"]) if last else ()
        target = _Target(origin, topic, partition, first, start, checkpoint)
        done.append(await _archive_one(conn, schema, control, target, directory, keys))
    return done


@dataclass(frozen=True, slots=True)
class _Target:
    origin: str
    topic: str
    partition: int
    first: int
    start_frontier: tuple[bytes, ...]
    checkpoint: asyncpg.Record


async def _archive_one(
    conn: asyncpg.Connection, schema: str, control: str, target: _Target, directory: Path, keys: list[str]
) -> Archived:
    origin, topic, partition, first = target.origin, target.topic, target.partition, target.first
    start_frontier, checkpoint = target.start_frontier, target.checkpoint
    end = checkpoint["tree_size"]
    bounds = await conn.fetchrow(
        f"""SELECT min(kafka_offset) AS lo, max(kafka_offset) AS hi, count(*) AS n FROM {_quote(schema)}.merkle_leaves
             WHERE topic = $1 AND partition = $2 AND leaf_index >= $3 AND leaf_index < $4""",
        topic,
        partition,
        first,
        end,
    )
    if bounds is None or bounds["n"] != end - first:
        raise ArchivingError(f"{origin}: leaves {first}..{end - 1} are not all stored; run verify --integrity")
    header = archive.ArchiveHeader(
        origin, topic, partition, first, end, bounds["lo"], bounds["hi"] + 1, start_frontier, checkpoint["note"]
    )
    folder = directory / topic / str(partition)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{first:012d}-{end:012d}.ndjson.gz"
    partial = path.with_suffix(".partial")
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        nodes = await conn.fetch(
            f"""SELECT level, node_index, hash FROM {_quote(schema)}.merkle_nodes
                 WHERE topic = $1 AND partition = $2 AND node_index * (1::bigint << level) >= $3
                   AND (node_index + 1) * (1::bigint << level) <= $4 ORDER BY level, node_index""",
            topic,
            partition,
            first,
            end,
        )
        with partial.open("wb") as out:
            writer = archive.Writer(out, header)
            async for r in _leaves(conn, schema, topic, partition, first, end):
                writer.add(r["leaf_index"], r["kafka_offset"], bytes(r["leaf_data"]))
            frontier, root = writer.finish([(r[0], r[1], bytes(r[2])) for r in nodes])
            out.flush()
            os.fsync(out.fileno())
    if root != bytes(checkpoint["root_hash"]):
        partial.unlink()
        raise ArchivingError(f"{origin}: the stored leaves do not rebuild the checkpoint at {end}; nothing deleted")
    try:
        archive.verify(partial, keys)
    except archive.ArchiveError as e:
        partial.unlink()
        raise ArchivingError(f"{origin}: the archive did not verify ({e}); nothing deleted") from e
    partial.rename(path)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename is durable before any row goes
    finally:
        os.close(fd)
    data = path.read_bytes()
    with db_errors("cannot register the archive and delete its rows"):
        async with conn.transaction():
            deleted = await conn.fetchval(
                f"SELECT {_quote(schema)}.archive_rows($1, $2, $3, $4)", schema, topic, partition, header.end_offset
            )
            await conn.execute(
                f"""INSERT INTO {control}.archives (topic, partition, first_leaf, end_leaf, first_offset, end_offset,
                        root_hash, end_frontier, checkpoint, file_name, file_sha256, file_bytes, rows_deleted)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
                topic, partition, first, end, header.first_offset, header.end_offset, root, frontier,
                checkpoint["note"], str(path), hashlib.sha256(data).digest(), len(data), deleted,
            )  # fmt: skip
    log.info("partition_archived", origin=origin, leaves=end - first, rows=deleted, file=str(path), bytes=len(data))
    return Archived(topic, partition, first, end, path, len(data), int(deleted))


async def _leaves(
    conn: asyncpg.Connection, schema: str, topic: str, partition: int, first: int, end: int
) -> AsyncIterator[asyncpg.Record]:
    async for r in conn.cursor(
        f"""SELECT leaf_index, kafka_offset, leaf_data FROM {_quote(schema)}.merkle_leaves
             WHERE topic = $1 AND partition = $2 AND leaf_index >= $3 AND leaf_index < $4 ORDER BY leaf_index""",
        topic,
        partition,
        first,
        end,
        prefetch=2000,
    ):
        yield r


__all__ = ["Archived", "ArchivingError", "archive_partitions"]
