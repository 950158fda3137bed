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
from aiokafka import AIOKafkaConsumer, TopicPartition

from audit_projector.config import Settings
from audit_projector.errors import ProjectorError, db_errors, kafka_errors
from audit_projector.repository import quoted
from audit_projector.topics import partitions_of
from audit_projector.witnessing.store import cosigned_note
from audit_schemas import archive, merkle
from audit_schemas.checkpoint import CheckpointError, NoteVerifier, open_checkpoint

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
    control = quoted(control_schema)
    done: list[Archived] = []
    with db_errors("cannot list the trees"):
        trees = await conn.fetch(f"SELECT topic, partition FROM {quoted(schema)}.merkle_trees ORDER BY 1, 2")
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
                f"""SELECT c.tree_size, c.root_hash, {cosigned_note(control)} AS note
                      FROM {control}.checkpoints c
                     WHERE c.origin = $1 AND c.signed_at < now() - $2::interval AND c.tree_size > $3
                     ORDER BY c.tree_size DESC LIMIT 1""",
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
        f"""SELECT min(kafka_offset) AS lo, max(kafka_offset) AS hi, count(*) AS n FROM {quoted(schema)}.merkle_leaves
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
            f"""SELECT level, node_index, hash FROM {quoted(schema)}.merkle_nodes
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
                f"SELECT {quoted(schema)}.archive_rows($1, $2, $3, $4)", schema, topic, partition, header.end_offset
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
        f"""SELECT leaf_index, kafka_offset, leaf_data FROM {quoted(schema)}.merkle_leaves
             WHERE topic = $1 AND partition = $2 AND leaf_index >= $3 AND leaf_index < $4 ORDER BY leaf_index""",
        topic,
        partition,
        first,
        end,
        prefetch=2000,
    ):
        yield r


@dataclass(frozen=True, slots=True)
class ArchivedRange:
    """What a replay starts from in one partition: the tree and offset after its last archive."""

    topic: str
    partition: int
    end_leaf: int
    end_offset: int
    end_frontier: tuple[bytes, ...]
    checked_against_log: bool
    """True when the archived range was re-read from Kafka and rebuilt the archive's root; False when the broker
    had deleted it and the archive's signed checkpoint alone vouches for it."""


async def replay_start(
    conn: asyncpg.Connection,
    settings: Settings,
    keys: list[str],
) -> list[ArchivedRange]:
    """Before a replay into `settings.db_schema`: refuse when the broker deleted history no verified archive
    covers; otherwise, per archived partition, check the tree across the archived range (re-reading it from
    Kafka when the broker still has it) and seed the schema's offset and tree after it, so the replay skips it."""
    control = quoted(settings.control_schema)
    with db_errors("cannot read the archives"):
        rows = await conn.fetch(
            f"""SELECT DISTINCT ON (topic, partition) topic, partition, end_leaf, end_offset, end_frontier, checkpoint
                  FROM {control}.archives WHERE topic = ANY($1::text[])
                 ORDER BY topic, partition, end_leaf DESC""",
            list(settings.topics),
        )
    archives = {(r["topic"], r["partition"]): r for r in rows}
    starts = await _log_starts(settings)
    for (topic, partition), start in sorted(starts.items()):
        covered = archives.get((topic, partition))
        if start > 0 and (covered is None or covered["end_offset"] < start):
            raise ArchivingError(
                f"{topic}/{partition}: the broker's log starts at offset {start} (it deleted what came before) and "
                + ("no archive covers it" if covered is None else f"the archives end at offset {covered['end_offset']}")
                + "; a replay would silently lose that history"
            )
    if archives and not keys:
        raise ArchivingError(
            "parts of the log are archived: a replay needs the log's verifier key to trust them (configure the "
            "checkpoint signing key, or pass --key)"
        )
    verifiers = [NoteVerifier.parse(k) for k in keys]
    done: list[ArchivedRange] = []
    for (topic, partition), r in sorted(archives.items()):
        frontier = [bytes(h) for h in r["end_frontier"]]
        origin = f"{settings.log_name}/{topic}/{partition}"
        try:
            checkpoint = open_checkpoint(r["checkpoint"], verifiers)
        except CheckpointError as e:
            raise ArchivingError(f"{origin}: the archive's checkpoint does not verify ({e})") from e
        if (checkpoint.origin, checkpoint.size, checkpoint.root) != (
            origin,
            r["end_leaf"],
            merkle.frontier_root(frontier),
        ):
            raise ArchivingError(f"{origin}: the archive registry's frontier is not the one its checkpoint signs")
        readable = starts.get((topic, partition), 0) == 0
        if readable:
            await _check_against_log(settings, topic, partition, r["end_offset"], r["end_leaf"], frontier)
        else:  # the broker no longer has it: only the archive files vouch for it, so they must verify now
            await _verify_files(conn, control, topic, partition, keys)
        await _seed(conn, settings, topic, partition, r["end_offset"], r["end_leaf"], frontier)
        done.append(ArchivedRange(topic, partition, r["end_leaf"], r["end_offset"], tuple(frontier), readable))
    return done


async def _verify_files(conn: asyncpg.Connection, control: str, topic: str, partition: int, keys: list[str]) -> None:
    """Every archive file of the partition, as registered: present, unchanged (sha256) and verifying offline as a
    chain from leaf 0."""
    files = await conn.fetch(
        f"""SELECT file_name, file_sha256 FROM {control}.archives WHERE topic = $1 AND partition = $2
             ORDER BY first_leaf""",
        topic,
        partition,
    )
    paths = [Path(f["file_name"]) for f in files]
    for path, f in zip(paths, files, strict=True):
        try:
            digest = hashlib.sha256(path.read_bytes()).digest()
        except OSError as e:
            raise ArchivingError(
                f"{topic}/{partition}: the broker deleted history that only {path} holds, and it cannot be read "
                f"({e.strerror}); make the archive directory available to the replay"
            ) from e
        if digest != bytes(f["file_sha256"]):
            raise ArchivingError(f"{topic}/{partition}: {path} is not the archive that was registered (sha256)")
    try:
        archive.verify_chain(paths, keys)
    except archive.ArchiveError as e:
        raise ArchivingError(f"{topic}/{partition}: the archives do not verify: {e}") from e


async def _log_starts(settings: Settings) -> dict[tuple[str, int], int]:
    """Where the broker's log of each projected partition starts now (above 0: it deleted what came before)."""
    parts = await partitions_of(settings.bootstrap_servers, list(settings.topics), settings.kafka)
    partitions = [TopicPartition(t, p) for t, numbers in parts.items() for p in numbers]
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, **settings.kafka.client_options()
    )
    with kafka_errors("cannot read where the broker's log starts"):
        await consumer.start()
        try:
            starts = await consumer.beginning_offsets(partitions)
        finally:
            await consumer.stop()
    return {(tp.topic, tp.partition): int(n) for tp, n in starts.items()}


async def _check_against_log(
    settings: Settings, topic: str, partition: int, end_offset: int, end_leaf: int, frontier: list[bytes]
) -> None:
    """Re-read [0, end_offset) of the partition and rebuild the tree: it must end where the archive ends."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="none",
        **settings.kafka.client_options(),
    )
    built: list[bytes] = []
    size = 0
    with kafka_errors(f"cannot re-read {topic}/{partition}"):
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, 0)
            idle = 0
            while size < end_leaf:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
                records = [r for r in batch.get(tp, []) if r.offset < end_offset]
                idle = 0 if batch else idle + 1
                if idle >= 10:
                    raise ArchivingError(f"{topic}/{partition}: the log ended before offset {end_offset}")
                data = [
                    merkle.leaf_data(topic, partition, r.offset, r.key, list(r.headers or ()), r.value) for r in records
                ]
                built, size, _ = merkle.append_leaves(built, size, [merkle.leaf_hash(d) for d in data])
                if records and records[-1].offset >= end_offset - 1:
                    break
        finally:
            await consumer.stop()
    if size != end_leaf or built != frontier:
        raise ArchivingError(
            f"{topic}/{partition}: the log's first {end_offset} offsets make {size} leaves with another root than "
            f"the archive of {end_leaf} leaves: the log or the archive was altered"
        )


async def _seed(
    conn: asyncpg.Connection,
    settings: Settings,
    topic: str,
    partition: int,
    offset: int,
    size: int,
    frontier: list[bytes],
) -> None:
    """Start the schema's partition after the archive (a resumed replay keeps what it already has)."""
    schema = quoted(settings.db_schema)
    with db_errors("cannot seed the replay after the archive"):
        async with conn.transaction():
            await conn.execute(
                f"""INSERT INTO {schema}.projector_offsets (consumer_group, topic, partition, next_offset)
                    VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
                settings.group_id, topic, partition, offset,
            )  # fmt: skip
            await conn.execute(
                f"""INSERT INTO {schema}.merkle_trees (topic, partition, size, frontier)
                    VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
                topic, partition, size, frontier,
            )  # fmt: skip


__all__ = ["Archived", "ArchivedRange", "ArchivingError", "archive_partitions", "replay_start"]
