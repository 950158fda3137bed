"""Wire the projector together from Settings and run it until told to stop."""

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, datetime
from typing import Any

import structlog
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from audit_projector import metrics
from audit_projector.checkpoints import Checkpointer
from audit_projector.config import Settings
from audit_projector.deadletter import KafkaDeadLetterSink, TableOnlyDeadLetters
from audit_projector.errors import PausedError, ProjectorError, db_errors, explain_refusal, kafka_errors
from audit_projector.health import create_health_app
from audit_projector.migrations import ReadModelKind, migrate
from audit_projector.pipeline import Pipeline, months_ahead
from audit_projector.repository import ProjectionRepository, compact_rollups, open_session, pause_state
from audit_projector.scope import Selector
from audit_projector.state import PipelineState, ProjectorState
from audit_projector.topics import check_retention, ensure_topics
from audit_projector.witnessing.runner import cosign_periodically
from audit_schemas import postgres
from audit_schemas.checkpoint import CheckpointError, NoteSigner

log = structlog.get_logger(__name__)

_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 5.0  # a database failover or a broker election is over in seconds: retry within them
_CLOSE_TIMEOUT_S = 5.0


async def prepare(settings: Settings, kind: ReadModelKind = "live") -> None:
    """Migrations (when the owner DSN is configured) and topics: safe to run from every instance. `kind` is how
    a read model not registered yet is registered (a rebuild's is a shadow)."""
    if settings.migrations_database_url is not None:
        await migrate(
            str(settings.migrations_database_url), settings.db_schema, control_schema=settings.control_schema, kind=kind
        )
    topics = [settings.audit_topic, settings.execution_log_topic, settings.dead_letter_topic, settings.checkpoint_topic]
    created = await ensure_topics(settings.bootstrap_servers, topics, settings.partitions, settings.kafka)
    if created:
        log.info("topics_created", topics=created, partitions=settings.partitions)
    await check_retention(
        settings.bootstrap_servers,
        list(settings.topics),
        settings.kafka,
        broker_time=settings.signatures_required,
        replicated=settings.environment != "development",
    )


@contextlib.asynccontextmanager
async def running_pipeline(
    settings: Settings, state: PipelineState, selector: Selector | None = None
) -> AsyncIterator[Pipeline]:
    """A started pipeline for `state.topic` with its connection, consumer and dead-letter producer."""
    purpose = "audit" if state.topic == settings.audit_topic else "logs"
    signer = _signer(settings)
    repo = await ProjectionRepository.connect(
        str(settings.database_url),
        settings.db_schema,
        settings.group_id,
        purpose,
        settings.control_schema,
        statement_timeout_s=settings.statement_timeout_s,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=int(settings.publish_timeout_s * 1000),
        **settings.kafka.client_options(),
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.kafka_group(state.topic),
        enable_auto_commit=False,
        # Never reset silently: an offset the broker no longer has is reported and stops its partition.
        auto_offset_reset="none",
        isolation_level="read_committed",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **settings.kafka.client_options(),
    )
    try:
        await repo.ensure_months(months_ahead(settings.months_ahead))
        with kafka_errors("cannot start the Kafka clients"):
            await producer.start()
            pipeline = Pipeline(
                consumer,
                repo,
                KafkaDeadLetterSink(producer, settings.dead_letter_topic, settings.publish_timeout_s)
                if settings.publish_dead_letters
                else TableOnlyDeadLetters(),
                state,
                max_records=settings.batch_max_records,
                poll_timeout_ms=settings.poll_timeout_ms,
                probe_interval_s=settings.probe_interval_s,
                months_ahead=settings.months_ahead,
                merkle=settings.merkle_enabled,
                require_signatures=settings.signatures_required,
                selector=selector,
                checkpointer=None
                if signer is None
                else Checkpointer(
                    signer,
                    repo,
                    producer,
                    topic=settings.checkpoint_topic,
                    log_name=settings.log_name,
                    every_leaves=settings.checkpoint_every_leaves,
                    every_s=settings.checkpoint_every_s,
                ),
            )
            await pipeline.refresh_keys()
            pipeline.subscribe()
            await consumer.start()
        yield pipeline
    except BaseException:
        repo.drop()  # a failed pipeline's session may sit on a hung server: no goodbye to wait for
        raise
    finally:
        state.assigned.clear()
        state.positions.clear()
        state.lag.clear()
        await _bounded(consumer.stop(), "consumer", consumer._client)
        await _bounded(producer.stop(), "dead-letter producer", producer.client)
        await repo.close()


def _signer(settings: Settings) -> NoteSigner | None:
    """The checkpoint signing key, or None when none is configured (or the tree is off)."""
    try:
        key = settings.signer_key() if settings.merkle_enabled else None
        return None if key is None else NoteSigner.parse(key)
    except (OSError, CheckpointError) as e:
        raise ProjectorError(f"unusable checkpoint signing key: {e}") from e


async def _bounded(step: Awaitable[Any], what: str, client: Any) -> None:
    """Close a client within a deadline: an unreachable broker must not hold up a shutdown.

    Past the deadline the client's connections are closed outright (aiokafka's `client.close()` closes every
    socket before it waits for anything), so nothing is left open behind the stop.
    """
    try:
        await asyncio.wait_for(step, _CLOSE_TIMEOUT_S)
    except Exception as e:
        log.warning("close_incomplete", client=what, error=repr(e)[:200])
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 1)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the projector's loop; the projector handles SIGTERM/SIGINT itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run one projector (a pipeline per topic, and its health server) until SIGINT/SIGTERM or `stop`.

    On stop, the batch in flight commits or rolls back within `shutdown_timeout_s`; then clients close.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    state = ProjectorState(stall_after_s=settings.stall_after_s)
    metrics.watch(state)
    server: _EmbeddedServer | None = None
    health: asyncio.Task[None] | None = None
    if settings.health_port:
        config = uvicorn.Config(
            create_health_app(state),
            host=settings.health_host,
            port=settings.health_port,
            log_config=None,
            access_log=False,
        )
        server = _EmbeddedServer(config)
        health = asyncio.create_task(server.serve())
    prepared = _Prepared(settings)
    supervisors = [
        asyncio.create_task(_supervise(settings, state.pipeline(topic), prepared, stop), name=f"pipeline:{topic}")
        for topic in settings.topics
    ]
    compactor = asyncio.create_task(_compact_periodically(settings, stop), name="rollup-compaction")
    cosigner = asyncio.create_task(cosign_periodically(settings, _signer(settings), state, stop), name="cosigner")
    try:
        await _until_stopped_or_failed(supervisors, stop)
    finally:
        state.alive = False
        stop.set()
        await _drain(supervisors, settings.shutdown_timeout_s)
        for helper in (compactor, cosigner):
            helper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await helper
        if server is not None and health is not None:
            server.should_exit = True
            await health
        log.info("projector_stopped", projected=state.projected, dead_lettered=state.dead_lettered)
    for task in supervisors:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def compact_once(settings: Settings) -> int | None:
    """Fold closed hours' and days' rollups into the coarser tables over a connection of its own (see
    `compact_rollups`); the number of days touched, or None when another process is compacting."""
    conn = await open_session(str(settings.database_url), settings.db_schema, "compaction", settings.group_id)
    try:
        return await compact_rollups(conn, datetime.now(UTC))
    finally:
        await postgres.close(conn)


async def wait_while_paused(settings: Settings, stop: asyncio.Event, every_s: float = 0.5) -> None:
    """Until an operator resumes the read model (or `stop`): the pipeline then starts over from stored offsets."""
    while not stop.is_set():
        try:
            with db_errors("cannot open a connection to read the pause"):
                conn = await postgres.connect(str(settings.database_url))
            try:
                paused, _ = await pause_state(conn, settings.control_schema, settings.db_schema)
            finally:
                await postgres.close(conn)
            if not paused:
                return
        except ProjectorError as e:
            log.warning("pause_unreadable", error=str(e))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


async def _compact_periodically(settings: Settings, stop: asyncio.Event) -> None:
    """Compact every `rollup_compaction_interval_s`; a failure is logged and tried again next time."""
    if not settings.rollup_compaction_interval_s:
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.rollup_compaction_interval_s)
            return
        try:
            days = await compact_once(settings)
        except ProjectorError as e:
            log.warning("rollup_compaction_failed", error=str(e))
        else:
            if days:
                log.info("rollups_compacted", days=days)


async def _until_stopped_or_failed(supervisors: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([stopped, *supervisors], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()


async def _drain(supervisors: list[asyncio.Task[None]], timeout_s: float) -> None:
    """Let pipelines finish their batch; past the deadline cancel them, which rolls the batch back."""
    _, pending = await asyncio.wait(supervisors, timeout=timeout_s)
    for task in pending:
        log.warning("shutdown_deadline_passed", task=task.get_name())
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=_CLOSE_TIMEOUT_S * 3)


class _Prepared:
    """Migrations and topics, done once per process by whichever pipeline gets there first."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = asyncio.Lock()
        self._done = False

    async def ensure(self) -> None:
        async with self._lock:
            if not self._done:
                await prepare(self._settings)
                self._done = True


async def _supervise(settings: Settings, state: PipelineState, prepared: _Prepared, stop: asyncio.Event) -> None:
    """Run one pipeline; after a lost connection rebuild it from Postgres' offsets, with backoff."""
    backoff = _BACKOFF_START_S
    while not stop.is_set():
        try:
            await prepared.ensure()
            async with running_pipeline(settings, state) as pipeline:
                state.last_error = None
                backoff = _BACKOFF_START_S
                log.info("pipeline_started", topic=state.topic, group=settings.group_id, schema=settings.db_schema)
                await pipeline.run(stop)
        except PausedError as paused:
            state.last_error = str(paused)
            log.warning("pipeline_paused", topic=state.topic, read_model=paused.read_model, reason=str(paused))
            await wait_while_paused(settings, stop)
            log.info("pipeline_resuming", topic=state.topic, read_model=paused.read_model)
        except ProjectorError as caught:
            e = await explain_refusal(caught, settings.kafka, settings.bootstrap_servers)
            state.last_error = str(e)
            if not e.retriable:
                log.error("pipeline_failed", topic=state.topic, error=str(e))
                if e is caught:
                    raise
                raise e from caught.__cause__
            state.restarts += 1
            metrics.RESTARTS.labels(state.topic).inc()
            log.warning("pipeline_restarting", topic=state.topic, error=str(e), after_s=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)
