"""Publish refused records to the dead-letter topic, with why and where they came from."""

import asyncio
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from audit_projector.errors import DeadLetterError


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

    def row(self) -> tuple[str, int, int, str, str, bytes | None, bytes | None]:
        """The `dead_letters` row, in the column order of rows.DEAD_LETTER_COLUMNS."""
        return (self.topic, self.partition, self.offset, self.reason, self.detail, self.key, self.value)


class DeadLetterSink(Protocol):
    """Where dead letters go before the batch that skips them commits."""

    async def publish(self, letters: list[DeadLetter]) -> None: ...


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
        ("dlq.detail", letter.detail.encode()[:4096]),
        ("dlq.source.topic", letter.topic.encode()),
        ("dlq.source.partition", str(letter.partition).encode()),
        ("dlq.source.offset", str(letter.offset).encode()),
    ]
