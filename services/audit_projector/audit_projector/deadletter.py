"""Publish refused records to the dead-letter topic, with why and where they came from."""

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from audit_projector.errors import DeadLetterError
from audit_projector.rows import Coordinates, Row


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the projector will not project, and the reason."""

    topic: str
    partition: int
    offset: int
    reason: str
    """Short code: invalid_json, invalid_envelope, unknown_type, unknown_action, schema_validation…"""
    detail: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def at(self) -> Coordinates:
        """Where the refused record sits."""
        return Coordinates(self.topic, self.partition, self.offset)

    def row(self) -> Row:
        """The `dead_letters` row, in the column order of rows.DEAD_LETTER_COLUMNS."""
        headers = json.dumps([[k, base64.b64encode(v or b"").decode()] for k, v in self.headers])
        values = (self.topic, self.partition, self.offset, self.reason, self.detail, self.key, self.value, headers)
        return Row(self.at, values)


class DeadLetterSink(Protocol):
    """Where dead letters go before the batch that skips them commits."""

    async def publish(self, letters: list[DeadLetter]) -> None: ...


class TableOnlyDeadLetters:
    """For a rebuild: the live projectors already published these records' dead letters; a replay records them in
    its own `dead_letters` table only, instead of publishing them again on every rebuild."""

    async def publish(self, letters: list[DeadLetter]) -> None:
        return None


class KafkaDeadLetterSink:
    """Dead-letter topic publisher: the original key, value and headers plus `dlq.*` headers."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout = timeout_s

    async def publish(self, letters: list[DeadLetter]) -> None:
        """Send all letters and wait for every acknowledgement (acks=all) within the deadline."""
        if not letters:
            return
        try:
            async with asyncio.timeout(self._timeout):
                futures = [
                    await self._producer.send(self._topic, key=d.key, value=d.value, headers=_headers(d))
                    for d in letters
                ]
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError) as e:
            raise DeadLetterError(f"dead-letter publish failed: {e!r}") from e


def _headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    return [
        *letter.headers,
        ("dlq.reason", letter.reason.encode()),
        ("dlq.detail", letter.detail.encode(errors="replace")[:4096]),
        ("dlq.source.topic", letter.topic.encode()),
        ("dlq.source.partition", str(letter.partition).encode()),
        ("dlq.source.offset", str(letter.offset).encode()),
    ]


def safe_detail(text: str, limit: int = 8192) -> str:
    """A reason's detail as text PostgreSQL and Kafka headers can carry: no NUL, no lone surrogates, bounded."""
    cleaned = text.replace("\x00", "\\x00").encode("utf-8", errors="backslashreplace").decode("utf-8")
    return cleaned[:limit]
