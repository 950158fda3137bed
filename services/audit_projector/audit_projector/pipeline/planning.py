"""Plan: a partition's decoded records into the batch — rows, dead letters (poison, operator skips), a block before
a newer schema — and the offset to store after them."""

from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from aiokafka import ConsumerRecord

from audit_projector.deadletter import DeadLetter, safe_detail
from audit_projector.pipeline.decoding import Decoded
from audit_projector.repository import Batch, Block, Skip
from audit_projector.rows import Coordinates
from audit_schemas import EnvelopeError, NewerSchemaError

log = structlog.get_logger(__name__)


@dataclass
class Plan:
    """A batch being assembled: what it writes, the dead letters it publishes first, the records it came from."""

    batch: Batch = field(default_factory=Batch)
    letters: list[DeadLetter] = field(default_factory=list)
    records: dict[Coordinates, ConsumerRecord] = field(default_factory=dict)

    def add(self, polled: list[Decoded], skips: Mapping[Coordinates, Skip]) -> int | None:
        """Add one partition's decoded records; return the offset to store after them (None: nothing to move)."""
        next_offset: int | None = None
        for record, at, item in polled:
            self.records[at] = record
            skip = skips.get(at)
            if skip is not None and skip.kind == "dead_letter":
                self.letter(record, at, "operator_skip", f"skipped by {skip.requested_by}: {skip.reason}")
            elif isinstance(item, NewerSchemaError):
                version = None if item.schema_version is None else str(item.schema_version)
                self.batch.blocks.append(
                    Block(at.topic, at.partition, at.offset, "newer_schema", str(item), item.event_type, version)
                )
                # Stop before it: the offset stays on the newer event until an upgraded projector reads it.
                return at.offset
            elif isinstance(item, EnvelopeError):
                self.letter(record, at, item.reason, item.detail)
            elif item is not None:
                self.batch.rows.put(*item)
            next_offset = at.offset + 1
        return next_offset

    def letter(self, record: ConsumerRecord, at: Coordinates, reason: str, detail: str) -> None:
        """Dead-letter `record`: published before the batch commits, and kept in the batch's dead-letter rows."""
        letter = DeadLetter(
            at.topic,
            at.partition,
            at.offset,
            reason,
            safe_detail(detail),
            record.key,
            record.value,
            tuple(record.headers or ()),
        )
        self.letters.append(letter)
        self.batch.rows.dead_letters.append(letter.row())
        log.warning(
            "record_dead_lettered",
            topic=at.topic,
            partition=at.partition,
            offset=at.offset,
            reason=reason,
            detail=letter.detail[:300],
        )

    @property
    def projected(self) -> int:
        """Rows of events (entries, outcomes, log lines) the batch writes."""
        rows = self.batch.rows
        return len(rows.entries) + len(rows.outcomes) + len(rows.logs)
