"""Wire the projector together from Settings and run it until told to stop."""

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import structlog
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from audit_projector.config import Settings
from audit_projector.consumer import Projector
from audit_projector.deadletter import KafkaDeadLetterSink
from audit_projector.errors import DependencyUnavailableError, ProjectorError
from audit_projector.health import create_health_app
from audit_projector.migrations import migrate
from audit_projector.repository import ProjectionRepository
from audit_projector.state import ProjectorState
from audit_projector.topics import ensure_topics

log = structlog.get_logger(__name__)

_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 30.0


async def prepare(settings: Settings) -> None:
    """Migrations (when the owner DSN is configured) and topics: safe to run from every instance."""
    if settings.migrations_database_url is not None:
        await migrate(str(settings.migrations_database_url), settings.db_schema)
    topics = [settings.audit_topic, settings.execution_log_topic, settings.dead_letter_topic]
    created = await ensure_topics(settings.bootstrap_servers, topics, settings.partitions)
    if created:
        log.info("topics_created", topics=created, partitions=settings.partitions)


@contextlib.asynccontextmanager
async def running_projector(settings: Settings, state: ProjectorState) -> AsyncIterator[Projector]:
    """A started projector with its connection, consumer and dead-letter producer; all closed on exit."""
    repo = await ProjectionRepository.connect(str(settings.database_url), settings.db_schema, settings.group_id)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=int(settings.publish_timeout_s * 1000),
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    try:
        await repo.ensure_partitions(settings.months_ahead)
        await producer.start()
        projector = Projector(
            consumer,
            repo,
            KafkaDeadLetterSink(producer, settings.dead_letter_topic, settings.publish_timeout_s),
            state,
            topics=settings.topics,
            max_records=settings.batch_max_records,
            poll_timeout_ms=settings.poll_timeout_ms,
            months_ahead=settings.months_ahead,
        )
        projector.subscribe()
        await consumer.start()
        yield projector
    except KafkaError as e:
        kind = DependencyUnavailableError if e.retriable else ProjectorError
        raise kind(f"kafka client failed: {e!r}") from e
    finally:
        await consumer.stop()
        await producer.stop()
        await repo.close()


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run one projector instance (and its health server) until SIGINT/SIGTERM or `stop`."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    state = ProjectorState()
    health: asyncio.Task[None] | None = None
    server: uvicorn.Server | None = None
    if settings.health_port:
        config = uvicorn.Config(
            create_health_app(state),
            host=settings.health_host,
            port=settings.health_port,
            log_config=None,
            access_log=False,
        )
        server = uvicorn.Server(config)
        health = asyncio.create_task(server.serve())
    try:
        await _supervise(settings, state, stop)
    finally:
        if server is not None and health is not None:
            server.should_exit = True
            await health
        log.info("projector_stopped", projected=state.projected, dead_lettered=state.dead_lettered)


async def _supervise(settings: Settings, state: ProjectorState, stop: asyncio.Event) -> None:
    """Run the pipeline; after a lost connection rebuild it from Postgres' offsets, with backoff."""
    backoff = _BACKOFF_START_S
    while not stop.is_set():
        try:
            await prepare(settings)
            async with running_projector(settings, state) as projector:
                state.last_error = None
                backoff = _BACKOFF_START_S
                log.info(
                    "projector_started",
                    group=settings.group_id,
                    topics=list(settings.topics),
                    schema=settings.db_schema,
                )
                await projector.run(stop)
        except ProjectorError as e:
            state.last_error = str(e)
            if not e.retriable:
                raise
            log.warning("projector_restarting", error=str(e), after_s=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)
