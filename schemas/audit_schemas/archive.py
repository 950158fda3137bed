"""Verifiable archives of a partition's log: gzip-compressed NDJSON holding the leaves [first, end) of one
partition's Merkle tree (each leaf is the raw Kafka record, so the content is all there), the tree's frontier
before them, the interior nodes inside the range, and the signed checkpoint of size `end`. Anyone with the log's
verifier key can check a file offline: the leaves rebuild the signed root from the frontier before them.

Line 1 is the header, then one `leaf` line per leaf in order, one `nodes` line, and an `end` line:

    {"kind": "audit-trail-archive", "version": 1, "origin": "<log>/<topic>/<partition>", "topic", "partition",
     "first_leaf", "end_leaf", "first_offset", "end_offset", "start_frontier": [b64...], "checkpoint": "<note>"}
    {"kind": "leaf", "index": 0, "offset": 0, "data": "<b64 leaf data>"}
    {"kind": "nodes", "nodes": [[level, index, "<b64>"], ...]}
    {"kind": "end", "leaves": N, "end_frontier": [b64...], "root": "<b64>"}
"""

import base64
import binascii
import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from audit_schemas import merkle
from audit_schemas.checkpoint import Checkpoint, CheckpointError
from audit_schemas.trust import TrustPolicy

KIND: Final = "audit-trail-archive"
VERSION: Final = 1


class ArchiveError(ValueError):
    """The archive does not prove what it claims (or is not an archive)."""


@dataclass(frozen=True, slots=True)
class ArchiveHeader:
    """What an archive covers, and what it is checked against."""

    origin: str
    topic: str
    partition: int
    first_leaf: int
    end_leaf: int
    first_offset: int
    end_offset: int
    """The offset after the last archived record: where the log continues."""
    start_frontier: tuple[bytes, ...]
    checkpoint: str
    """The signed note of the tree at `end_leaf` leaves."""


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    """A verified archive: its header, the checkpoint it matched, and the tree after it."""

    header: ArchiveHeader
    checkpoint: Checkpoint
    end_frontier: tuple[bytes, ...]
    leaves: int
    nodes: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise ArchiveError(f"{what} is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ArchiveError(f"{what} is not valid base64") from e


class Writer:
    """Writes one archive incrementally (constant memory however many leaves): header, leaves in order, then
    `finish` with the nodes; the end frontier and root are recomputed from the leaves as they pass."""

    def __init__(self, out: IO[bytes], header: ArchiveHeader) -> None:
        self._header = header
        self._frontier, self._size = list(header.start_frontier), header.first_leaf
        self._z = gzip.GzipFile(fileobj=out, mode="wb", mtime=0)
        self._z.write(_line({
            "kind": KIND, "version": VERSION, "origin": header.origin, "topic": header.topic,
            "partition": header.partition, "first_leaf": header.first_leaf, "end_leaf": header.end_leaf,
            "first_offset": header.first_offset, "end_offset": header.end_offset,
            "start_frontier": [_b64(h) for h in header.start_frontier], "checkpoint": header.checkpoint,
        }))  # fmt: skip

    def add(self, index: int, offset: int, data: bytes) -> None:
        """The next leaf: its index, its record's offset and the leaf data (the raw record)."""
        if index != self._size:
            raise ArchiveError(f"leaf {index} written out of order (expected {self._size})")
        self._frontier, self._size, _ = merkle.append_leaves(self._frontier, self._size, [merkle.leaf_hash(data)])
        self._z.write(_line({"kind": "leaf", "index": index, "offset": offset, "data": _b64(data)}))

    def finish(self, nodes: Iterable[tuple[int, int, bytes]]) -> tuple[list[bytes], bytes]:
        """Write the nodes and the end line; return the end frontier and root."""
        header = self._header
        if self._size != header.end_leaf:
            raise ArchiveError(
                f"{self._size - header.first_leaf} leaves written, the header promises "
                f"{header.end_leaf - header.first_leaf}"
            )
        self._z.write(_line({"kind": "nodes", "nodes": [[lv, ix, _b64(h)] for lv, ix, h in nodes]}))
        root = merkle.frontier_root(self._frontier)
        self._z.write(_line({"kind": "end", "leaves": self._size - header.first_leaf,
                             "end_frontier": [_b64(h) for h in self._frontier], "root": _b64(root)}))  # fmt: skip
        self._z.close()
        return self._frontier, root


def write(
    out: IO[bytes],
    header: ArchiveHeader,
    leaves: Iterable[tuple[int, int, bytes]],
    nodes: Iterable[tuple[int, int, bytes]],
) -> tuple[list[bytes], bytes]:
    """Write a whole archive: `leaves` as (index, offset, leaf data) in order, `nodes` as (level, index, hash);
    return the end frontier and root."""
    writer = Writer(out, header)
    for index, offset, data in leaves:
        writer.add(index, offset, data)
    return writer.finish(nodes)


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def _records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with gzip.open(path, "rb") as z:
            for number, line in enumerate(z, 1):
                try:
                    record = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise ArchiveError(f"line {number} is not JSON: {e}") from e
                if not isinstance(record, dict):
                    raise ArchiveError(f"line {number} is not a JSON object")
                yield record
    except (OSError, EOFError, zlib.error) as e:
        raise ArchiveError(f"{path.name}: not a complete gzip file ({e})") from e


def _int(record: dict[str, Any], name: str) -> int:
    value = record.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ArchiveError(f"{name} is not a non-negative integer")
    return value


def read_header(path: Path) -> ArchiveHeader:
    """The archive's first line, checked for shape only."""
    for record in _records(path):
        return _header(record)
    raise ArchiveError(f"{path.name} is empty")


def _header(record: dict[str, Any]) -> ArchiveHeader:
    if record.get("kind") != KIND or record.get("version") != VERSION:
        raise ArchiveError(f"not an {KIND} of version {VERSION}")
    frontier = record.get("start_frontier")
    if not isinstance(frontier, list):
        raise ArchiveError("start_frontier is not a list")
    for name in ("origin", "topic", "checkpoint"):
        if not isinstance(record.get(name), str):
            raise ArchiveError(f"{name} is not text")
    return ArchiveHeader(
        record["origin"], record["topic"], _int(record, "partition"), _int(record, "first_leaf"),
        _int(record, "end_leaf"), _int(record, "first_offset"), _int(record, "end_offset"),
        tuple(_unb64(h, "start_frontier") for h in frontier), record["checkpoint"],
    )  # fmt: skip


def verify(path: Path, keys: list[str] | TrustPolicy, previous: ArchiveSummary | None = None) -> ArchiveSummary:
    """Check one archive offline against the verifier keys (or a policy that also asks for witnesses): every leaf
    in order and in the header's range, their hashes rebuilding the checkpoint's root from the start frontier, the
    nodes matching the leaves, and the checkpoint's signatures. With `previous` (the same partition's earlier
    archive) the two must join up."""
    try:
        trusted = keys if isinstance(keys, TrustPolicy) else TrustPolicy.parse(keys)
    except CheckpointError as e:
        raise ArchiveError(f"bad verifier key: {e}") from e
    records = _records(path)
    header = _header(next(records, {}))
    if header.origin.rpartition("/")[0].rpartition("/")[2] != header.topic or not header.origin.endswith(
        f"/{header.partition}"
    ):
        raise ArchiveError(f"origin {header.origin} does not name {header.topic}/{header.partition}")
    if previous is not None:
        if previous.header.origin != header.origin or previous.header.end_leaf != header.first_leaf:
            raise ArchiveError(f"{path.name} does not continue the previous archive of {previous.header.origin}")
        if previous.end_frontier != header.start_frontier:
            raise ArchiveError(f"{path.name} starts from a frontier the previous archive did not end with")
    elif header.first_leaf == 0 and header.start_frontier:
        raise ArchiveError("an archive from leaf 0 starts from an empty tree")
    frontier, size = list(header.start_frontier), header.first_leaf
    made: dict[tuple[int, int], bytes] = {}
    last_offset = header.first_offset - 1
    record: dict[str, Any] = {}
    for record in records:
        if record.get("kind") != "leaf":
            break
        index, offset = _int(record, "index"), _int(record, "offset")
        if index != size:
            raise ArchiveError(f"leaf {size} is missing (found {index})")
        if offset <= last_offset or offset >= header.end_offset:
            raise ArchiveError(f"leaf {index}: offset {offset} is out of order or outside the archived range")
        data = _unb64(record.get("data"), f"leaf {index}")
        if not _names(data, header.topic, header.partition, offset):
            raise ArchiveError(f"leaf {index}: its record does not say {header.topic}/{header.partition}@{offset}")
        frontier, size, nodes = merkle.append_leaves(frontier, size, [merkle.leaf_hash(data)])
        made.update({(lv, ix): h for lv, ix, h in nodes})
        last_offset = offset
    if size != header.end_leaf:
        promised = header.end_leaf - header.first_leaf
        raise ArchiveError(f"{size - header.first_leaf} leaves, the header promises {promised}: truncated")
    if record.get("kind") != "nodes" or not isinstance(record.get("nodes"), list):
        raise ArchiveError("the nodes line is missing after the leaves")
    stored = 0
    for node in record["nodes"]:
        if not (isinstance(node, list) and len(node) == 3 and all(isinstance(x, int) for x in node[:2])):
            raise ArchiveError("a node is not [level, index, hash]")
        level, index = node[0], node[1]
        if made.get((level, index)) != _unb64(node[2], f"node {level}/{index}"):
            raise ArchiveError(f"node {level}/{index} does not match the archived leaves")
        stored += 1
    end = next(records, None)
    if end is None or end.get("kind") != "end":
        raise ArchiveError("the end line is missing: the archive is truncated")
    end_frontier = tuple(frontier)
    if [_unb64(h, "end_frontier") for h in end.get("end_frontier") or []] != list(end_frontier):
        raise ArchiveError("the end frontier does not match the leaves")
    root = merkle.frontier_root(frontier)
    try:
        checkpoint = trusted.open(header.checkpoint).checkpoint
    except CheckpointError as e:
        raise ArchiveError(f"the checkpoint does not verify: {e}") from e
    if checkpoint.origin != header.origin or checkpoint.size != header.end_leaf:
        raise ArchiveError(f"the checkpoint is for {checkpoint.origin} at {checkpoint.size}, not this archive's end")
    if checkpoint.root != root:
        raise ArchiveError("the leaves do not rebuild the checkpoint's root")
    if next(records, None) is not None:
        raise ArchiveError("data after the end line")
    return ArchiveSummary(header, checkpoint, end_frontier, size - header.first_leaf, stored)


def _names(data: bytes, topic: str, partition: int, offset: int) -> bool:
    """Whether a leaf's data encodes a record at topic/partition@offset (its first fields, see merkle.leaf_data)."""
    name = topic.encode()
    prefix = merkle.leaf_data(topic, partition, offset, None, [], None)[: 4 + len(name) + 12]
    return data.startswith(prefix)


def verify_chain(paths: list[Path], keys: list[str] | TrustPolicy) -> list[ArchiveSummary]:
    """Verify archives of one or more partitions; each partition's must start at leaf 0 and join up in order."""
    by_origin: dict[str, list[tuple[ArchiveHeader, Path]]] = {}
    for path in paths:
        header = read_header(path)
        by_origin.setdefault(header.origin, []).append((header, path))
    done: list[ArchiveSummary] = []
    for origin, files in sorted(by_origin.items()):
        previous: ArchiveSummary | None = None
        for header, path in sorted(files, key=lambda f: f[0].first_leaf):
            if previous is None and header.first_leaf != 0:
                raise ArchiveError(f"{origin}: the archive of leaves before {header.first_leaf} is missing")
            previous = verify(path, keys, previous)
            done.append(previous)
    return done


__all__ = [
    "ArchiveError",
    "ArchiveHeader",
    "ArchiveSummary",
    "Writer",
    "read_header",
    "verify",
    "verify_chain",
    "write",
]
