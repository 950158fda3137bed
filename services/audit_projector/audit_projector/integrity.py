"""`audit-projector verify --integrity`: recompute every tree from the stored raw records, check it against the
stored nodes, the signed checkpoints in the database, those published outside it (the checkpoint topic, an
auditor's file), and re-derive every read-model row from its leaf — naming every altered, inserted, deleted or
truncated place (bounded) by partition, leaf index and offset.

Everything is read in one snapshot and walked in log order: leaves and the rows of each table side by side.
"""

import json
import struct
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from uuid import UUID

import asyncpg

from audit_projector.errors import db_errors
from audit_projector.published import Published
from audit_projector.repository import quoted
from audit_projector.rows import ENTRY_COLUMNS, LOG_COLUMNS, OUTCOME_COLUMNS, Coordinates, Row, Table, row_for
from audit_projector.streams import OrderedRows, Position, in_log_order
from audit_schemas import EnvelopeError, NewerSchemaError, decode, merkle
from audit_schemas.checkpoint import Checkpoint, CheckpointError, NoteVerifier, open_checkpoint

FINDINGS_LISTED: Final = 1000
"""Findings kept with their text; any beyond are counted."""

_TABLES: Final[dict[Table, tuple[str, str, tuple[str, ...]]]] = {
    "entries": ("audit_entries", "audit_id", ENTRY_COLUMNS),
    "outcomes": ("audit_outcomes", "audit_id", OUTCOME_COLUMNS),
    "logs": ("execution_logs", "log_id", LOG_COLUMNS),
}
_JSON_COLUMNS: Final = frozenset({"changes", "fields", "unrecorded", "sealed"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing that does not match, and where."""

    topic: str
    partition: int | None
    leaf_index: int | None
    offset: int | None
    problem: str

    def __str__(self) -> str:
        where = self.topic if self.partition is None else f"{self.topic}/{self.partition}"
        if self.leaf_index is not None:
            where += f" leaf {self.leaf_index}"
        if self.offset is not None:
            where += f" (offset {self.offset})"
        return f"{where}: {self.problem}"


@dataclass(slots=True)
class Report:
    """What was checked and every place found damaged (the first `limit` with their text, all counted)."""

    partitions: int = 0
    leaves: int = 0
    checkpoints: int = 0
    published: int = 0
    """Checkpoints published outside the database (topic, file) that were held against the trees."""
    rows: int = 0
    archived_leaves: int = 0
    """Leaves before each partition's last archive: checked when archived, and here through its signed frontier."""
    findings: list[Finding] = field(default_factory=list)
    found: int = 0
    """Every finding, including those beyond `limit`."""
    limit: int = FINDINGS_LISTED

    def add(self, finding: Finding) -> None:
        """Record a finding (its text only while under the limit)."""
        self.found += 1
        if len(self.findings) < self.limit:
            self.findings.append(finding)


@dataclass(frozen=True, slots=True)
class _Outside:
    checkpoint: Checkpoint
    source: str


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


async def verify_integrity(
    conn: asyncpg.Connection,
    control_schema: str,
    keys: Sequence[str],
    log_name: str,
    *,
    published: Sequence[Published] = (),
    lagging: bool = False,
    limit: int = FINDINGS_LISTED,
) -> Report:
    """Check every partition's tree in the schema on the connection's search path (read as the owner).

    `published` are notes from outside the database, read before this call (so each was stored before its
    snapshot). `lagging` says the schema is a rebuild that may not have reached the log's newest checkpoints yet:
    checkpoints beyond its trees are then not findings.
    """
    checker = _Checker(conn, quoted(control_schema), [NoteVerifier.parse(k) for k in keys], log_name, lagging, limit)
    with db_errors("cannot read the trees"):
        if conn.is_in_transaction():
            await checker.run(published)
        else:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await checker.run(published)
    return checker.report


class _Checker:
    """One walk over a snapshot: the leaves in log order, each table's rows merged beside them."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        control: str,
        verifiers: list[NoteVerifier],
        log_name: str,
        lagging: bool,
        limit: int,
    ) -> None:
        self.conn = conn
        self.control = control
        self.verifiers = verifiers
        self.log_name = log_name
        self.lagging = lagging
        self.report = Report(limit=limit)
        self.signed: dict[str, dict[int, asyncpg.Record]] = defaultdict(dict)
        self.outside: dict[str, dict[int, list[_Outside]]] = defaultdict(lambda: defaultdict(list))
        self.rows: dict[Table, OrderedRows] = {}

    def origin(self, topic: str, partition: int) -> str:
        return f"{self.log_name}/{topic}/{partition}"

    def where(self, origin: str) -> tuple[str, int | None]:
        """The topic and partition an origin of this log names."""
        topic, _, partition = origin.removeprefix(f"{self.log_name}/").rpartition("/")
        return (topic, int(partition)) if partition.isdigit() and topic else (origin, None)

    async def run(self, published: Sequence[Published]) -> None:
        trees = {(r["topic"], r["partition"]): r for r in await self.conn.fetch("SELECT * FROM merkle_trees")}
        archives = {
            (r["topic"], r["partition"]): r
            for r in await self.conn.fetch(
                f"""SELECT DISTINCT ON (topic, partition) topic, partition, end_leaf, end_offset, end_frontier,
                           checkpoint FROM {self.control}.archives ORDER BY topic, partition, end_leaf DESC"""
            )
        }
        for r in await self.conn.fetch(
            f"SELECT origin, tree_size, root_hash, note FROM {self.control}.checkpoints WHERE starts_with(origin, $1)",
            f"{self.log_name}/",
        ):
            self.signed[r["origin"]][r["tree_size"]] = r
        self.open_published(published)
        for kind, (table, _, _) in _TABLES.items():
            self.rows[kind] = await OrderedRows.open(self.conn, in_log_order(table))
        self.dead = await OrderedRows.open(self.conn, in_log_order("dead_letters", columns="kafka_offset"))
        self.verdicts = await OrderedRows.open(
            self.conn, in_log_order("record_verdicts", "topic", "partition", columns="kafka_offset")
        )
        leaves = await OrderedRows.open(
            self.conn,
            """SELECT topic, partition, kafka_offset, leaf_index, leaf_hash, leaf_data FROM merkle_leaves
                ORDER BY topic COLLATE "C", partition, leaf_index""",
        )
        walked: set[tuple[str, int]] = set()
        walk: _TreeWalk | None = None
        while (leaf := await leaves.next()) is not None:
            key = (leaf["topic"], leaf["partition"])
            if walk is None or walk.key != key:
                if walk is not None:
                    await walk.finish()
                walk = await self.start(key, trees.get(key), archives.get(key))
                walked.add(key)
            await walk.leaf(leaf)
        if walk is not None:
            await walk.finish()
        for key in sorted(set(trees) - walked):
            await (await self.start(key, trees[key], archives.get(key))).finish()
            walked.add(key)
        for kind, stream in self.rows.items():
            for row in await stream.rest():
                self.inserted(kind, row)
        if not self.lagging:
            self.lost_partitions(walked)

    def open_published(self, published: Sequence[Published]) -> None:
        for p in published:
            try:
                checkpoint = open_checkpoint(p.note, self.verifiers)
            except CheckpointError as e:
                self.report.add(Finding(p.source, None, None, None, f"a published checkpoint does not verify: {e}"))
                continue
            if checkpoint.origin.startswith(f"{self.log_name}/"):
                self.outside[checkpoint.origin][checkpoint.size].append(_Outside(checkpoint, p.source))
                self.report.published += 1

    async def start(
        self, key: tuple[str, int], tree: asyncpg.Record | None, archive: asyncpg.Record | None
    ) -> "_TreeWalk":
        self.report.partitions += 1
        walk = _TreeWalk(self, key, tree, archive)
        await walk.begin()
        return walk

    def inserted(self, kind: Table, row: asyncpg.Record) -> None:
        self.report.add(
            Finding(row[0], row[1], None, row[2], f"a row in {_TABLES[kind][0]} that no leaf records (inserted)")
        )

    def lost_partitions(self, walked: set[tuple[str, int]]) -> None:
        """Checkpoints of partitions that have neither a tree nor a leaf left."""
        for origin in sorted(set(self.signed) | set(self.outside)):
            topic, partition = self.where(origin)
            if partition is not None and (topic, partition) in walked:
                continue
            sizes = set(self.signed.get(origin, {})) | set(self.outside.get(origin, {}))
            self.report.add(
                Finding(
                    topic,
                    partition,
                    None,
                    None,
                    f"checkpoints up to size {max(sizes)} exist but no tree or leaf (deleted)",
                )
            )

    def checkpoint_problem(self, checkpoint: asyncpg.Record, root: bytes) -> str | None:
        try:
            opened = open_checkpoint(checkpoint["note"], self.verifiers)
        except CheckpointError as e:
            return f"the checkpoint at size {checkpoint['tree_size']} does not verify with the trusted keys: {e}"
        if opened.root != root or checkpoint["root_hash"] != root:
            return f"the leaves up to size {checkpoint['tree_size']} do not hash to the signed root"
        return None

    async def row_problem(self, value: bytes | None, at: Coordinates) -> str | None:
        """Re-project the leaf's record and compare with the row at its position (None when equal or when its
        absence is accounted for)."""
        position: Position = (at.topic, at.partition, at.offset)
        for kind, stream in self.rows.items():
            for orphan in await stream.before(position):
                self.inserted(kind, orphan)
        await self.dead.before(position)
        await self.verdicts.before(position)
        dead = await self.dead.at(position) is not None
        duplicate = await self.verdicts.at(position) is not None
        stored = {kind: await stream.at(position) for kind, stream in self.rows.items()}
        present = [kind for kind, row in stored.items() if row is not None]
        try:
            kind, expected = row_for(decode(value), at)
        except (EnvelopeError, NewerSchemaError):
            if present:
                return f"a {_TABLES[present[0]][0]} row for a record the projector refused (inserted)"
            return None
        table, id_column, columns = _TABLES[kind]
        if any(k != kind for k in present):
            return f"a row in another table than the record's ({table}) (inserted)"
        row = stored.get(kind)
        if row is None:
            if dead:
                return None
            if duplicate and await self.stored_elsewhere(table, id_column, expected):
                return None
            if kind == "logs" and await self.same_line_stored(expected):
                return None  # a re-sent line: its first copy is the row
            return f"its {table} row is missing (deleted or truncated)"
        if dead:
            return f"a {table} row for a dead-lettered record (inserted)"
        return _compare(row, expected, table, columns)

    async def same_line_stored(self, line: Row) -> bool:
        """Whether an identical execution-log line (same time, id and content) is stored at another offset."""
        found = await self.conn.fetchrow(
            "SELECT * FROM execution_logs WHERE logged_at = $1 AND log_id = $2", line.values[0], line.values[1]
        )
        if found is None:
            return False
        content = LOG_COLUMNS[: LOG_COLUMNS.index("kafka_topic")]
        return _compare(found, Row(line.at, line.values[: len(content)]), "execution_logs", content) is None

    async def stored_elsewhere(self, table: str, id_column: str, row: Row) -> bool:
        if row.claim is None:
            return False
        found = await self.conn.fetchval(f"SELECT 1 FROM {table} WHERE {id_column} = $1", row.claim.audit_id)
        return found is not None


class _TreeWalk:
    """One partition's tree recomputed leaf by leaf and held against what the database and others say of it."""

    def __init__(
        self, checker: _Checker, key: tuple[str, int], tree: asyncpg.Record | None, archive: asyncpg.Record | None
    ) -> None:
        self.checker = checker
        self.report = checker.report
        self.key = key
        self.topic, self.partition = key
        self.tree = tree
        self.archive = archive
        origin = checker.origin(*key)
        self.signed = checker.signed.get(origin, {})
        self.outside = checker.outside.get(origin, {})
        self.frontier: list[bytes] = list(archive["end_frontier"]) if archive else []
        self.count: int = archive["end_leaf"] if archive else 0
        self.last_offset: int = archive["end_offset"] - 1 if archive else -1
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.broken = False
        """The recomputed tree no longer follows the stored one (a leaf is missing): its roots prove nothing more."""
        self.root_mismatches = 0

    def add(self, leaf_index: int | None, offset: int | None, problem: str) -> None:
        self.report.add(Finding(self.topic, self.partition, leaf_index, offset, problem))

    async def begin(self) -> None:
        if self.archive is None:
            return
        self.report.archived_leaves += self.count
        problem = self.archive_problem()
        if problem is not None:
            self.add(self.count - 1, None, problem)
            self.broken = True
            return
        self.check_outside(merkle.frontier_root(self.frontier), None)

    def archive_problem(self) -> str | None:
        """Whether the archive's frontier is the one its registered signed checkpoint commits to."""
        assert self.archive is not None
        try:
            checkpoint = open_checkpoint(self.archive["checkpoint"], self.checker.verifiers)
        except CheckpointError as e:
            return f"the archive's checkpoint does not verify: {e}"
        origin = self.checker.origin(self.topic, self.partition)
        if (checkpoint.origin, checkpoint.size) != (origin, self.count) or checkpoint.root != merkle.frontier_root(
            self.frontier
        ):
            return "the archive registry's frontier is not the one its signed checkpoint commits to"
        return None

    async def leaf(self, leaf: asyncpg.Record) -> None:
        index, offset, data = leaf["leaf_index"], leaf["kafka_offset"], leaf["leaf_data"]
        if index < self.count:
            self.add(index, offset, "leaf index out of order")
            return
        if index > self.count:
            self.add(self.count, None, f"leaves {self.count} to {index - 1} are missing (deleted)")
            self.broken = True
            self.count = index
        computed = merkle.leaf_hash(data)
        readable, value = _record_of(data, self.topic, self.partition, offset)
        if computed != leaf["leaf_hash"] or not readable:
            self.add(index, offset, "the leaf's record was altered")
        if offset <= self.last_offset:
            self.add(index, offset, "offsets do not increase")
        elif readable:
            mismatch = await self.checker.row_problem(value, Coordinates(self.topic, self.partition, offset))
            if mismatch is not None:
                self.add(index, offset, mismatch)
            self.report.rows += 1
        self.frontier, self.count, made = merkle.append_leaves(self.frontier, self.count, [computed])
        for level, node_index, value in made:
            self.nodes[(level, node_index)] = value
        self.last_offset = max(offset, self.last_offset)
        self.report.leaves += 1
        if self.count in self.signed or self.count in self.outside:
            self.check_size(offset)

    def check_size(self, offset: int | None) -> None:
        """The signed and published checkpoints at the size just reached, against the recomputed root."""
        if self.broken:
            return
        root = merkle.frontier_root(self.frontier)
        signed = self.signed.get(self.count)
        if signed is not None:
            problem = self.checker.checkpoint_problem(signed, root)
            if problem is None:
                self.report.checkpoints += 1
            else:
                self.root_mismatch(offset, problem)
        self.check_outside(root, offset)

    def check_outside(self, root: bytes, offset: int | None) -> None:
        for seen in self.outside.get(self.count, []):
            if seen.checkpoint.root != root:
                self.root_mismatch(
                    offset, f"the checkpoint at size {self.count} published on {seen.source} has another root"
                )
            elif self.count not in self.signed and not (self.archive and self.count == self.archive["end_leaf"]):
                self.add(
                    self.count - 1,
                    offset,
                    f"the checkpoint at size {self.count} published on {seen.source} is missing from the database "
                    "(deleted)",
                )

    def root_mismatch(self, offset: int | None, problem: str) -> None:
        """The first disagreeing root of a partition is named; the ones after it follow from it and are counted."""
        self.root_mismatches += 1
        if self.root_mismatches == 1:
            self.add(self.count - 1, offset, problem)

    async def finish(self) -> None:
        if self.root_mismatches > 1:
            self.add(None, None, f"and {self.root_mismatches - 1} later checkpoints do not match either")
        size = self.tree["size"] if self.tree is not None else None
        if size is None:
            self.add(None, None, f"{self.count} leaves but no tree record")
        elif self.count != size:
            self.add(self.count, None, f"the tree records {size} leaves but {self.count} are stored (deleted)")
        if not self.checker.lagging:
            beyond = [s for s in self.signed if s > self.count]
            if beyond:
                self.add(self.count, None, f"a signed checkpoint covers {max(beyond)} leaves, {self.count} are stored")
            ahead = [s for s in self.outside if s > self.count]
            if ahead:
                sources = self.outside[max(ahead)]
                self.add(
                    self.count,
                    None,
                    f"the tree holds {self.count} leaves but a checkpoint published on {sources[0].source} covers "
                    f"{max(ahead)} (rolled back)",
                )
        if self.tree is None or self.broken:
            return
        if list(self.tree["frontier"]) != self.frontier:
            self.add(None, None, "the stored frontier does not match the leaves")
        stored = {
            (r["level"], r["node_index"]): r["hash"]
            for r in await self.checker.conn.fetch(
                "SELECT level, node_index, hash FROM merkle_nodes WHERE topic = $1 AND partition = $2",
                self.topic,
                self.partition,
            )
        }
        archived_end = self.archive["end_leaf"] if self.archive else 0
        stored = {
            k: v for k, v in stored.items() if (k[1] + 1) * (1 << k[0]) > archived_end
        }  # the archive has the rest
        if stored != self.nodes:
            differing = sorted(set(stored.items()) ^ set(self.nodes.items()))
            self.add(None, None, f"stored node {differing[0][0]} does not match the leaves ({len(differing)} differ)")


def _record_of(data: bytes, topic: str, partition: int, offset: int) -> tuple[bool, bytes | None]:
    """Whether the leaf data encodes a record at this position, and that record's value (parsed once)."""
    try:
        parsed = parse_leaf_data(data)
    except (ValueError, struct.error, UnicodeDecodeError):
        return False, None
    return parsed[:3] == (topic, partition, offset), parsed[5]


def _normal(column: str, value: Any) -> Any:
    """A stored or projected value in one comparable form (JSON parsed, addresses and ids as text)."""
    if value is None:
        return None
    if column in _JSON_COLUMNS:
        return json.loads(value)
    if column == "client_ip":
        return str(value)
    if isinstance(value, UUID):
        return value.hex
    if column in ("trace_id", "log_id", "audit_id"):
        try:
            return UUID(str(value)).hex
        except ValueError:
            return value
    return value


def _compare(stored: asyncpg.Record, row: Row, table: str, columns: tuple[str, ...]) -> str | None:
    for column, expected in zip(columns, row.values, strict=True):
        if _normal(column, stored[column]) != _normal(column, expected):
            return f"{table}.{column} differs from the record (altered)"
    return None


__all__ = ["FINDINGS_LISTED", "Finding", "Report", "parse_leaf_data", "verify_integrity"]
