"""The cosigner's task in a projector process: a round every `witness_interval_s` on a connection of its own, one
cosigner per control schema at a time (an advisory lock), errors logged and tried again next round."""

import asyncio
import contextlib

import httpx
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from audit_projector import metrics
from audit_projector.config import Settings
from audit_projector.errors import ProjectorError, db_errors
from audit_projector.repository import SESSION_SETTINGS
from audit_projector.state import ProjectorState
from audit_projector.witnessing.client import Result, WitnessClient
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
        clients = [WitnessClient(w.verifier, w.endpoint, http) for w in settings.witnesses]
        cosigner = Cosigner(signer, clients, publish, f"{settings.log_name}/", settings.quorum)
        try:
            while not stop.is_set():
                try:
                    await _round(settings, cosigner, state)
                except Exception:  # a fault on the witnessing side never stops projection
                    log.exception("cosigning_round_failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.witness_interval_s)
        finally:
            if producer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5)


async def _round(settings: Settings, cosigner: Cosigner, state: ProjectorState) -> None:
    try:
        with db_errors("cannot open a connection to cosign checkpoints"):
            conn = await postgres.connect(
                str(settings.database_url),
                server_settings={
                    "search_path": settings.db_schema,
                    "application_name": f"audit-projector/cosigner/{settings.group_id}"[:63],
                    **SESSION_SETTINGS,
                },
            )
    except ProjectorError as e:
        log.warning("cosigning_failed", error=str(e)[:300])
        return
    store = WitnessStore(conn, settings.control_schema)
    try:
        with db_errors("cosigning checkpoints"):
            if not await store.lock(settings.control_schema):
                return  # another projector of the fleet is cosigning
            try:
                late = await cosigner.round(store)
            finally:
                await store.unlock(settings.control_schema)
        state.unwitnessed = [origin for origin, age in late if age > settings.witness_grace_s]
    except ProjectorError as e:
        log.warning("cosigning_failed", error=str(e)[:300])
    finally:
        with contextlib.suppress(Exception):
            await conn.close()
