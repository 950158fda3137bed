"""Signed checkpoints of each partition's Merkle tree: every N leaves or T seconds, to PostgreSQL and Kafka."""

import time
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from audit_projector import metrics
from audit_projector.errors import ProjectorError
from audit_projector.repository import ProjectionRepository, TreeState
from audit_schemas.checkpoint import Checkpoint, NoteSigner
from audit_schemas.merkle import frontier_root

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Signed:
    size: int
    at: float


class Checkpointer:
    """Signs checkpoints with the projector's key (read from a file or the environment, never the database).

    A checkpoint is stored in the control schema, then published to its own topic (acks=all), so someone with
    database access alone cannot quietly re-sign or drop history: the topic holds what was signed, and
    `verify --integrity` holds the database to it.
    """

    def __init__(
        self,
        signer: NoteSigner,
        repo: ProjectionRepository,
        producer: AIOKafkaProducer,
        *,
        topic: str,
        log_name: str,
        every_leaves: int,
        every_s: float,
    ) -> None:
        self._signer = signer
        self._repo = repo
        self._producer = producer
        self._topic = topic
        self._log_name = log_name
        self._every_leaves = every_leaves
        self._every_s = every_s
        self._signed: dict[str, _Signed] = {}

    def origin(self, topic: str, partition: int) -> str:
        """`<log name>/<topic>/<partition>`."""
        return f"{self._log_name}/{topic}/{partition}"

    async def start(self, partitions: list[tuple[str, int]]) -> None:
        """List the key and learn what was signed before (so a restart does not sign everything again at once)."""
        await self._repo.register_key(self._signer.name, self._signer.key_hash, self._signer.verifier_key)
        origins = [self.origin(t, p) for t, p in partitions]
        for origin, size in (await self._repo.last_checkpoints(origins)).items():
            self._signed[origin] = _Signed(size, time.monotonic())

    async def maybe_sign(self, topic: str, partition: int, tree: TreeState, *, due_by_time: bool = False) -> None:
        """Sign when `every_leaves` leaves arrived since the last checkpoint, or (with `due_by_time`) after
        `every_s` seconds with anything new. A failure is logged and retried at the next chance."""
        origin = self.origin(topic, partition)
        last = self._signed.get(origin)
        if tree.size == 0 or (last is not None and last.size >= tree.size):
            return
        grown = tree.size - (last.size if last else 0)
        aged = last is None or time.monotonic() - last.at >= self._every_s
        if grown < self._every_leaves and not (due_by_time and aged):
            return
        checkpoint = Checkpoint(origin, tree.size, frontier_root(tree.frontier))
        note = self._signer.sign(checkpoint.body(), origin)  # also under its origin: how witnesses know the key
        # Stored before it is published: whatever a verifier reads on the topic, the database had already.
        try:
            await self._repo.store_checkpoint(
                origin, tree.size, checkpoint.root, self._signer.name, self._signer.key_hash, note
            )
        except ProjectorError as e:
            log.warning("checkpoint_not_signed", origin=origin, size=tree.size, error=str(e)[:300])
            return
        self._signed[origin] = _Signed(tree.size, time.monotonic())
        metrics.CHECKPOINTS.labels(topic).inc()
        metrics.LAST_CHECKPOINT.labels(topic).set(time.time())
        try:
            await self._producer.send_and_wait(self._topic, note.encode(), key=origin.encode())
        except KafkaError as e:
            # Kept in the database; the next checkpoint of this origin is published as usual.
            log.warning("checkpoint_not_published", origin=origin, size=tree.size, error=str(e)[:300])
            return
        log.debug("checkpoint_signed", origin=origin, size=tree.size)
