"""`audit-projector verify --integrity`: recompute every tree from the stored raw records, check it against the
stored nodes, the signed checkpoints (and the checkpoint topic), and re-derive every read-model row from its
leaf — naming the first altered, inserted, deleted or truncated entry by partition, leaf index and offset.
"""

import json
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from audit_projector.errors import db_errors
from audit_projector.repository import quoted
from audit_projector.rows import ENTRY_COLUMNS, LOG_COLUMNS, OUTCOME_COLUMNS, Coordinates, Row, row_for
from audit_schemas import EnvelopeError, NewerSchemaError, decode, merkle
from audit_schemas.checkpoint import CheckpointError, NoteVerifier, open_checkpoint

_CHUNK = 5000
_TABLES = {
    "entries": ("audit_entries", "audit_id"),
    "outcomes": ("audit_outcomes", "audit_id"),
    "logs": ("execution_logs", "log_id"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing that does not match, and where."""

    topic: str
    partition: int
    leaf_index: int | None
    offset: int | None
    problem: str

    def __str__(self) -> str:
        where = f"{self.topic}/{self.partition}"
        if self.leaf_index is not None:
            where += f" leaf {self.leaf_index}"
        if self.offset is not None:
            where += f" (offset {self.offset})"
        return f"{where}: {self.problem}"


@dataclass(slots=True)
class Report:
    """What was checked and what was found (the first finding per partition is the one to look at)."""

    partitions: int = 0
    leaves: int = 0
    checkpoints: int = 0
    rows: int = 0
    archived_leaves: int = 0
    """Leaves before each partition's last archive: checked when archived, and here through its signed frontier."""
    findings: list[Finding] = field(default_factory=list)


def parse_leaf_data(data: bytes) -> tuple[str, int, int, bytes | None, list[tuple[str, bytes]], bytes | None]:
    """The inverse of `merkle.leaf_data`; ValueError when the bytes are not one record's encoding."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise ValueError("truncated leaf data")
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    def string() -> bytes | None:
        (length,) = struct.unpack(">I", take(4))
        return None if length == 0xFFFFFFFF else take(length)

    topic = (string() or b"").decode()
    partition, offset = struct.unpack(">IQ", take(12))
    key = string()
    (count,) = struct.unpack(">I", take(4))
    headers = [((string() or b"").decode(), string() or b"") for _ in range(count)]
    value = string()
    if pos != len(data):
        raise ValueError("trailing bytes after the record")
    return topic, partition, offset, key, headers, value


async def verify_integrity(conn: asyncpg.Connection, control_schema: str, keys: Sequence[str], log_name: str) -> Report:
    """Check every partition's tree; the connection should be able to read everything (the owner)."""
    verifiers = [NoteVerifier.parse(k) for k in keys]
    report = Report()
    control = quoted(control_schema)
    with db_errors("cannot read the trees"):
        trees = await conn.fetch("SELECT topic, partition, size, frontier FROM merkle_trees ORDER BY topic, partition")
    for tree in trees:
        report.partitions += 1
        await _verify_tree(conn, control, tree, verifiers, log_name, report)
    with db_errors("cannot look for rows without leaves"):
        orphans = await conn.fetch(
            """SELECT e.kafka_topic, e.kafka_partition, e.kafka_offset, 'entries' AS t FROM audit_entries e
                WHERE NOT EXISTS (SELECT 1 FROM merkle_leaves l WHERE l.topic = e.kafka_topic
                                  AND l.partition = e.kafka_partition AND l.kafka_offset = e.kafka_offset)
               UNION ALL
               SELECT o.kafka_topic, o.kafka_partition, o.kafka_offset, 'outcomes' FROM audit_outcomes o
                WHERE NOT EXISTS (SELECT 1 FROM merkle_leaves l WHERE l.topic = o.kafka_topic
                                  AND l.partition = o.kafka_partition AND l.kafka_offset = o.kafka_offset)
               ORDER BY 1, 2, 3 LIMIT 100"""
        )
    for r in orphans:
        report.findings.append(Finding(r[0], r[1], None, r[2], f"a row in {r[3]} that no leaf records (inserted)"))
    return report


async def _verify_tree(
    conn: asyncpg.Connection,
    control: str,
    tree: asyncpg.Record,
    verifiers: list[NoteVerifier],
    log_name: str,
    report: Report,
) -> None:
    topic, partition, size = tree["topic"], tree["partition"], tree["size"]
    # Leaves in a verified archive left the database; the tree is checked on from the frontier after them.
    archived = await conn.fetchrow(
        f"""SELECT end_leaf, end_offset, end_frontier FROM {control}.archives WHERE topic = $1 AND partition = $2
             ORDER BY end_leaf DESC LIMIT 1""",
        topic,
        partition,
    )
    frontier: list[bytes] = list(archived["end_frontier"]) if archived else []
    count = archived["end_leaf"] if archived else 0
    last_offset = archived["end_offset"] - 1 if archived else -1
    report.archived_leaves += count
    if archived is not None:
        registered = await conn.fetchval(
            f"SELECT checkpoint FROM {control}.archives WHERE topic = $1 AND partition = $2 AND end_leaf = $3",
            topic,
            partition,
            count,
        )
        problem = _archive_problem(registered, f"{log_name}/{topic}/{partition}", count, frontier, verifiers)
        if problem is not None:
            report.findings.append(Finding(topic, partition, count - 1, None, problem))
            return
    checkpoints = {
        r["tree_size"]: r
        for r in await conn.fetch(
            f"SELECT tree_size, root_hash, note FROM {control}.checkpoints WHERE origin = $1",
            f"{log_name}/{topic}/{partition}",
        )
    }
    nodes: dict[tuple[int, int], bytes] = {}
    async for leaf in _leaves(conn, topic, partition, count):
        index, offset = leaf["leaf_index"], leaf["kafka_offset"]
        if index != count:
            gap = f"leaf {count} is missing (deleted)" if index > count else "leaf index out of order"
            report.findings.append(Finding(topic, partition, count, None, gap))
            return
        computed = merkle.leaf_hash(leaf["leaf_data"])
        if computed != leaf["leaf_hash"] or not _data_matches(leaf["leaf_data"], topic, partition, offset):
            report.findings.append(Finding(topic, partition, index, offset, "the leaf's record was altered"))
            return
        if offset <= last_offset:
            report.findings.append(Finding(topic, partition, index, offset, "offsets do not increase"))
            return
        mismatch = await _row_matches(conn, leaf["leaf_data"], Coordinates(topic, partition, offset))
        if mismatch is not None:
            report.findings.append(Finding(topic, partition, index, offset, mismatch))
            return
        frontier, count, made = merkle.append_leaves(frontier, count, [computed])
        for level, node_index, value in made:
            nodes[(level, node_index)] = value
        last_offset = offset
        report.leaves += 1
        report.rows += 1
        if count in checkpoints:
            problem = _checkpoint_problem(checkpoints[count], merkle.frontier_root(frontier), verifiers)
            if problem is not None:
                report.findings.append(Finding(topic, partition, count - 1, offset, problem))
                return
            report.checkpoints += 1
    if count != size:
        report.findings.append(
            Finding(topic, partition, count, None, f"the tree records {size} leaves but {count} are stored (deleted)")
        )
        return
    beyond = [s for s in checkpoints if s > count]
    if beyond:
        report.findings.append(
            Finding(
                topic, partition, count, None, f"a signed checkpoint covers {max(beyond)} leaves, {count} are stored"
            )
        )
        return
    if list(tree["frontier"]) != frontier:
        report.findings.append(Finding(topic, partition, None, None, "the stored frontier does not match the leaves"))
        return
    stored = {
        (r["level"], r["node_index"]): r["hash"]
        for r in await conn.fetch(
            "SELECT level, node_index, hash FROM merkle_nodes WHERE topic = $1 AND partition = $2", topic, partition
        )
    }
    archived_end = archived["end_leaf"] if archived else 0
    stored = {k: v for k, v in stored.items() if (k[1] + 1) * (1 << k[0]) > archived_end}  # the archive has the rest
    if stored != nodes:
        bad = sorted(set(stored.items()) ^ set(nodes.items()))[0]
        report.findings.append(Finding(topic, partition, None, None, f"stored node {bad[0]} does not match the leaves"))


async def _leaves(conn: asyncpg.Connection, topic: str, partition: int, first: int) -> AsyncIterator[asyncpg.Record]:
    after = first - 1
    while True:
        rows = await conn.fetch(
            """SELECT leaf_index, kafka_offset, leaf_hash, leaf_data FROM merkle_leaves
                WHERE topic = $1 AND partition = $2 AND leaf_index > $3 ORDER BY leaf_index LIMIT $4""",
            topic,
            partition,
            after,
            _CHUNK,
        )
        if not rows:
            return
        for r in rows:
            yield r
        after = rows[-1]["leaf_index"]


def _data_matches(data: bytes, topic: str, partition: int, offset: int) -> bool:
    try:
        parsed = parse_leaf_data(data)
    except (ValueError, struct.error):
        return False
    return parsed[:3] == (topic, partition, offset)


async def _row_matches(conn: asyncpg.Connection, data: bytes, at: Coordinates) -> str | None:
    """Re-project the leaf's record and compare with the stored row (None when equal or legitimately absent)."""
    _, _, _, _, _, value = parse_leaf_data(data)
    try:
        table_kind, row = row_for(decode(value), at)
    except (EnvelopeError, NewerSchemaError):
        return None  # dead-lettered: its verdict is in dead_letters, no read-model row
    table, id_column = _TABLES[table_kind]
    stored = await conn.fetchrow(
        f"SELECT * FROM {table} WHERE kafka_topic = $1 AND kafka_partition = $2 AND kafka_offset = $3",
        at.topic,
        at.partition,
        at.offset,
    )
    if stored is None:
        return await _absence_problem(conn, table, id_column, row)
    return _compare(stored, row, table)


async def _absence_problem(conn: asyncpg.Connection, table: str, id_column: str, row: Row) -> str | None:
    """A record without its row is fine only when it was a dropped duplicate or a refused conflict."""
    if row.claim is not None:
        dead = await conn.fetchval(
            "SELECT 1 FROM dead_letters WHERE kafka_topic = $1 AND kafka_partition = $2 AND kafka_offset = $3",
            row.at.topic,
            row.at.partition,
            row.at.offset,
        )
        duplicate = await conn.fetchval(
            "SELECT 1 FROM record_verdicts WHERE topic = $1 AND partition = $2 AND kafka_offset = $3",
            row.at.topic,
            row.at.partition,
            row.at.offset,
        )
        stored_elsewhere = await conn.fetchval(f"SELECT 1 FROM {table} WHERE {id_column} = $1", row.claim.audit_id)
        if dead or (duplicate and stored_elsewhere):
            return None
    return f"its {table} row is missing (deleted or truncated)"


def _compare(stored: asyncpg.Record, row: Row, table: str) -> str | None:
    columns = {"audit_entries": ENTRY_COLUMNS, "audit_outcomes": OUTCOME_COLUMNS, "execution_logs": LOG_COLUMNS}[table]
    for column, expected in zip(columns, row.values, strict=True):
        actual: Any = stored[column]
        if column in ("changes", "fields", "unrecorded"):
            actual = None if actual is None else json.loads(actual)
            expected = None if expected is None else json.loads(expected)
        elif column == "client_ip":
            actual, expected = (None if actual is None else str(actual)), (None if expected is None else str(expected))
        if actual != expected:
            return f"{table}.{column} differs from the record (altered)"
    return None


def _archive_problem(
    note: str, origin: str, size: int, frontier: list[bytes], verifiers: list[NoteVerifier]
) -> str | None:
    """Whether a registered archive's frontier is the one its signed checkpoint commits to."""
    try:
        checkpoint = open_checkpoint(note, verifiers)
    except CheckpointError as e:
        return f"the archive's checkpoint does not verify: {e}"
    if (checkpoint.origin, checkpoint.size) != (origin, size) or checkpoint.root != merkle.frontier_root(frontier):
        return "the archive registry's frontier is not the one its signed checkpoint commits to"
    return None


def _checkpoint_problem(checkpoint: asyncpg.Record, root: bytes, verifiers: list[NoteVerifier]) -> str | None:
    try:
        opened = open_checkpoint(checkpoint["note"], verifiers)
    except CheckpointError as e:
        return f"the checkpoint at size {checkpoint['tree_size']} does not verify with the trusted keys: {e}"
    if opened.root != root or checkpoint["root_hash"] != root:
        return f"the leaves up to size {checkpoint['tree_size']} do not hash to the signed root"
    return None
