"""Checkpoints published outside the database — on the checkpoint topic, or kept by an auditor in a file — that
`verify --integrity` holds the database's trees and checkpoints against (a rollback must contradict them)."""

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from audit_projector.errors import ProjectorError, kafka_errors
from audit_schemas.kafka_security import KafkaSecurity

_ROUNDS: Final = 10_000
"""Bound on fetch rounds while reading the topic to its end (each returns what the broker has ready)."""


class PublishedCheckpointError(ProjectorError):
    """A checkpoint file that is not one of the accepted forms."""


@dataclass(frozen=True, slots=True)
class Published:
    """One signed note as it was published, and where it was found (for the finding's text)."""

    note: str
    source: str


async def from_topic(
    bootstrap: str, topic: str, security: KafkaSecurity | None = None, timeout_s: float = 120.0
) -> list[Published]:
    """Every note on the checkpoint topic up to its end offsets now (read before the database's snapshot, so every
    note read was stored before the snapshot: the projector stores a checkpoint before publishing it)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **(security or KafkaSecurity()).client_options(),
    )
    found: list[Published] = []
    try:
        await _read(consumer, topic, found, timeout_s)
    except TimeoutError as e:
        raise ProjectorError(f"the checkpoint topic {topic} was not read within {timeout_s:.0f} s") from e
    return found


async def _read(consumer: AIOKafkaConsumer, topic: str, found: list[Published], timeout_s: float) -> None:
    with kafka_errors(f"cannot read the checkpoint topic {topic}"):
        async with asyncio.timeout(timeout_s):
            await consumer.start()
            try:
                partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
                if not partitions:
                    return
                ends = await consumer.end_offsets(partitions)
                for _ in range(_ROUNDS):
                    positions = [await consumer.position(tp) for tp in partitions]
                    if all(at >= ends[tp] for at, tp in zip(positions, partitions, strict=True)):
                        break
                    batch = await consumer.getmany(timeout_ms=500)
                    for tp, records in batch.items():
                        for r in records:
                            if r.offset < ends[tp] and r.value is not None:
                                text = r.value.decode("utf-8", errors="replace")
                                found.append(Published(text, f"{topic}/{r.partition}@{r.offset}"))
                else:
                    raise ProjectorError(f"the checkpoint topic {topic} was not read to its end")
            finally:
                await consumer.stop()


def from_file(path: Path) -> list[Published]:
    """Notes an auditor kept: the JSON the API serves (`GET /v1/checkpoints`: a list of objects with a `note`), a
    JSON object with a `checkpoints` list, JSON Lines of such objects, or one signed note as plain text."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise PublishedCheckpointError(f"cannot read checkpoint file {path}: {e}") from e
    source = str(path)
    stripped = text.lstrip()
    if not stripped.startswith(("[", "{")):
        if not text.endswith("\n") or "\n\n" not in text:
            raise PublishedCheckpointError(f"{path}: neither JSON nor a signed note")
        return [Published(text, source)]
    try:
        loaded: Any = json.loads(text)
        items = loaded.get("checkpoints") if isinstance(loaded, dict) else loaded
    except json.JSONDecodeError:
        try:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise PublishedCheckpointError(f"{path}: not JSON, JSON Lines or a note ({e})") from e
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("note"), str) for i in items):
        raise PublishedCheckpointError(f"{path}: expected a list of objects with a 'note'")
    return [Published(i["note"], f"{source}#{n}") for n, i in enumerate(items)]


__all__ = ["Published", "PublishedCheckpointError", "from_file", "from_topic"]
