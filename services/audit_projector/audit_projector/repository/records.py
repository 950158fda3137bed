"""What the pipeline hands the repository and gets back: a batch's rows, fences, blocks and tree appends."""

from dataclasses import dataclass, field
from datetime import datetime

from audit_projector.rows import BatchRows, Coordinates


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
    """A partition stopped before a record: newer schema, offset out of range or a database failure."""

    topic: str
    partition: int
    offset: int
    reason: str
    detail: str | None = None
    event_type: str | None = None
    schema_version: str | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    """An operator's request to dead-letter the record at `offset`, or to move the partition to `offset`."""

    topic: str
    partition: int
    offset: int
    kind: str
    reason: str
    requested_by: str


@dataclass(frozen=True, slots=True)
class ProducerKey:
    """A publisher's public key: the sources and tenants it may write for, and when."""

    key_id: str
    public_key: bytes
    sources: frozenset[str]
    tenants: frozenset[str] | None
    valid_from: datetime
    valid_until: datetime | None


@dataclass(frozen=True, slots=True)
class TreeState:
    """A partition's Merkle tree: how many leaves, and its right frontier."""

    size: int
    frontier: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class TreeAppend:
    """What a batch adds to one partition's tree: leaves, completed nodes, and the state before and after."""

    topic: str
    partition: int
    before: TreeState
    after: TreeState
    leaves: tuple[tuple[int, int, bytes, bytes], ...]
    """(leaf index, Kafka offset, leaf hash, leaf data)."""
    nodes: tuple[tuple[int, int, bytes], ...]
    """(level >= 1, index, hash)."""


@dataclass(slots=True)
class Batch:
    """What one transaction writes: rows, offset fences, blocks and Merkle tree appends."""

    rows: BatchRows = field(default_factory=BatchRows)
    fences: list[OffsetFence] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    trees: list[TreeAppend] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a committed batch inserted, and the re-sends it dropped as identical to what was stored."""

    duplicates: tuple[Coordinates, ...]
