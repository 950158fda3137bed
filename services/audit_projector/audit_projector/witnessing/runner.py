"""The cosigner's task in a projector process: a round every `witness_interval_s` on a connection of its own (kept
between rounds), one cosigner per control schema at a time (an advisory lock), errors logged and tried again next
round."""

import asyncio
import contextlib

import asyncpg
import httpx
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from audit_projector import metrics
from audit_projector.config import Settings
from audit_projector.errors import ProjectorError, db_errors
from audit_projector.repository import open_session
from audit_projector.state import ProjectorState
from audit_projector.witnessing.client import Result, witness_clients
from audit_projector.witnessing.cosigner import Cosigner
from audit_projector.witnessing.store import WitnessStore
from audit_schemas import postgres
from audit_schemas.checkpoint import NoteSigner

log = structlog.get_logger(__name__)


async def cosign_periodically(
    settings: Settings, signer: NoteSigner | None, state: ProjectorState, stop: asyncio.Event
) -> None:
    """Until `stop`: ask the witnesses to cosign; mark the origins that lack the quorum past the grace period."""
    if not settings.witnesses or signer is None:
        return
    for witness in settings.witnesses:  # every series from zero, so rates and alerts see the first one
        metrics.WITNESS_REFUSALS.labels(witness.name)
        for result in Result:
            metrics.WITNESS_REQUESTS.labels(witness.name, result.value)
    producer: AIOKafkaProducer | None = None  # made on first use: a log whose witnesses never answer opens none

    async def publish(origin: str, note: str) -> None:
        nonlocal producer
        try:
            if producer is None:
                fresh = AIOKafkaProducer(
                    bootstrap_servers=settings.bootstrap_servers,
                    acks="all",
                    enable_idempotence=True,
                    request_timeout_ms=int(settings.publish_timeout_s * 1000),
                    **settings.kafka.client_options(),
                )
                try:
                    await fresh.start()
                except KafkaError:
                    await fresh.stop()
                    raise
                producer = fresh
            await producer.send_and_wait(settings.checkpoint_topic, note.encode(), key=origin.encode())
        except KafkaError as e:  # stored already; the next cosignature of the origin publishes it again
            log.warning("cosigned_checkpoint_not_published", origin=origin, error=str(e)[:300])

    async with httpx.AsyncClient(timeout=settings.witness_timeout_s) as http:
        cosigner = Cosigner(signer, witness_clients(settings, http), publish, f"{settings.log_name}/", settings.quorum)
        conn: asyncpg.Connection | None = None  # kept from round to round, opened again after a failure
        try:
            while not stop.is_set():
                try:
                    if conn is None:
                        conn = await open_session(
                            str(settings.database_url), settings.db_schema, "cosigner", settings.group_id
                        )
                    late = await _round(settings, cosigner, WitnessStore(conn, settings.control_schema))
                    if late is not None:
                        state.unwitnessed = late
                except Exception as e:  # a fault on the witnessing side never stops projection
                    if isinstance(e, ProjectorError):
                        log.warning("cosigning_failed", error=str(e)[:300])
                    else:
                        log.exception("cosigning_round_failed")
                    await _closed(conn)
                    conn = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.witness_interval_s)
        finally:
            await _closed(conn)
            if producer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5)


async def _round(settings: Settings, cosigner: Cosigner, store: WitnessStore) -> list[str] | None:
    """One round under the fleet's lock: the origins lacking their quorum past the grace period, or None when
    another projector holds the lock (and reports them)."""
    with db_errors("cosigning checkpoints"):
        if not await store.lock(settings.control_schema):
            return None
        try:
            late = await cosigner.round(store)
        finally:
            await store.unlock(settings.control_schema)
    return [origin for origin, age in late if age > settings.witness_grace_s]


async def _closed(conn: asyncpg.Connection | None) -> None:
    """Close a connection that may already be broken; None, for the caller to open another next time."""
    if conn is not None:
        await postgres.close(conn)
    return
