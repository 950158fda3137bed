"""Write: publish the batch's dead letters, then commit it; records the database refuses are isolated and
dead-lettered, and the batch is tried again without them."""

from dataclasses import dataclass
from typing import Final

import structlog

from audit_projector.deadletter import DeadLetterSink
from audit_projector.errors import DatabaseError, FencedError, ProjectorError, RecordDataError, RecordsRejectedError
from audit_projector.pipeline.planning import Plan
from audit_projector.repository import ProjectionRepository
from audit_projector.rows import Coordinates

log = structlog.get_logger(__name__)

SYSTEMIC_SHARE: Final = 0.5
"""Above this share of a batch (of 10+ records) refused by the database, the fault is the database's."""


@dataclass(frozen=True, slots=True)
class Committed:
    """The batch is in: how many identical re-sends it dropped."""

    duplicates: int


@dataclass(frozen=True, slots=True)
class Fenced:
    """Another member moved some of the batch's partitions on first: nothing was written."""

    error: FencedError


@dataclass(frozen=True, slots=True)
class Failed:
    """The database, not a record, is at fault: nothing was written."""

    error: DatabaseError


async def write(
    plan: Plan, repository: ProjectionRepository, dead_letters: DeadLetterSink, topic: str
) -> Committed | Fenced | Failed:
    """Publish dead letters, then commit; isolate refused records (dead-lettered into `plan`) and retry."""
    published = 0
    isolate = False
    refused_by_db = 0
    records = plan.records
    for _ in range(len(records) + 2):  # each retry refuses at least one record, or isolates once
        await dead_letters.publish(plan.letters[published:])
        published = len(plan.letters)
        try:
            result = await repository.write_batch(plan.batch, isolate=isolate)
        except FencedError as e:
            return Fenced(e)
        except RecordDataError as e:
            if isolate:
                return Failed(DatabaseError(str(e)))
            log.warning("batch_refused_isolating", topic=topic, error=str(e)[:300])
            isolate = True
            continue
        except RecordsRejectedError as e:
            refused_by_db += sum(r.reason == "database_refused" for r in e.rejections)
            if len(records) >= 10 and refused_by_db > SYSTEMIC_SHARE * len(records):
                return Failed(DatabaseError(f"the database refused most of a batch: {e.rejections[0].detail}"))
            refused = set()
            for r in e.rejections:
                at = Coordinates(r.topic, r.partition, r.offset)
                refused.add(at)
                plan.letter(records[at], at, r.reason, r.detail)
            plan.batch.rows.without(refused)
            continue
        except DatabaseError as e:
            return Failed(e)
        if result.duplicates:
            log.info("duplicates_dropped", topic=topic, records=[str(c) for c in result.duplicates][:10])
        return Committed(len(result.duplicates))
    raise ProjectorError("batch could not be written after refusing every record")  # unreachable in practice
