"""Rebuild a read model from offset 0 into a shadow schema while the live one keeps serving; resumable."""

import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from audit_projector.archiving import ArchivedRange, replay_start
from audit_projector.compare import stored_offsets
from audit_projector.config import Settings
from audit_projector.errors import ProjectorError
from audit_projector.following import CatchUp, Progress, Targets, following
from audit_projector.scope import ReplayScope, Selector
from audit_projector.service import compact_once, prepare
from audit_projector.state import ProjectorState
from audit_schemas import postgres
from audit_schemas.checkpoint import NoteSigner

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay read and wrote."""

    schema: str
    records: int
    """Records up to the end offsets seen at start (all partitions of the projected topics)."""
    projected: int
    """Records this run projected (a resumed run does not count what an earlier run did)."""
    dead_lettered: int
    resumed_from: int = 0
    """Records an interrupted earlier run had already projected into the schema."""
    rows: dict[str, int] | None = None
    """Rows in the schema's tables at the end."""
    archived: tuple[ArchivedRange, ...] = ()
    """Partitions whose archived beginning was skipped (and how it was checked)."""
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        """Records read per second by this run (not counting what an earlier run or an archive covered)."""
        before = max(self.resumed_from, sum(a.end_offset for a in self.archived))
        return (self.records - before) / self.seconds if self.seconds > 0 else 0.0


async def catch_up(
    settings: Settings,
    state: ProjectorState,
    timeout_s: float,
    progress: Progress | None = None,
    *,
    targets: Targets | None = None,
    topics: Sequence[str] | None = None,
    selector: Selector | None = None,
) -> CatchUp:
    """Run a pipeline per topic (all projected topics, or `topics`) until each has projected up to the end offsets
    seen at its start (or at least up to `targets`, per partition, when given)."""
    async with following(settings, state, topics, selector) as follower:
        return await follower.reach(
            targets if targets is not None else await follower.end_offsets(), timeout_s, progress
        )


async def replay(
    settings: Settings,
    owner_dsn: str,
    timeout_s: float,
    progress: Progress | None = None,
    scope: ReplayScope | None = None,
) -> ReplayResult:
    """Project every record up to the end offsets seen at start into `settings.db_schema`.

    Positions are stored in that schema with each batch, so running it again after an interruption (Ctrl-C,
    a crash) continues where the last committed batch ended instead of starting over. With a `scope` (an
    investigation), only the actions it selects are projected, with their outcomes and log lines: the audit topic
    is read first, then the log topic; no Merkle tree is kept (leaves would carry records outside the scope).
    """
    # A rebuild signs nothing (the same roots already have their checkpoints) and publishes no dead letters (the
    # live projectors did); it records them in its own table.
    signer = settings.signer_key()
    keys = [NoteSigner.parse(signer).verifier_key] if signer else []
    update: dict[str, object] = {"checkpoint_key": None, "checkpoint_key_file": None, "publish_dead_letters": False}
    if scope is not None:
        update["merkle_enabled"] = False
    settings = settings.model_copy(update=update)
    await prepare(settings.model_copy(update={"migrations_database_url": owner_dsn}), kind="shadow")
    conn = await postgres.connect(owner_dsn)
    try:
        # What an earlier, interrupted run of this replay already projected (read before seeding archived ranges).
        stored = await stored_offsets(conn, settings.db_schema, settings.group_id)
        resumed = sum(n for (topic, _), n in stored.items() if topic in settings.topics)
        archived = await replay_start(conn, settings, keys)
    finally:
        await conn.close()
    state = ProjectorState()
    started = time.perf_counter()
    if scope is None:
        done = await catch_up(settings, state, timeout_s, progress)
    else:
        if resumed:
            raise ProjectorError(
                f"{settings.db_schema} holds an interrupted investigation rebuild: a scoped rebuild cannot resume "
                "(it decides on each action's start); drop the schema and run it again"
            )
        selector = Selector(scope)
        first = await catch_up(settings, state, timeout_s, progress, topics=[settings.audit_topic], selector=selector)
        second = await catch_up(
            settings, state, timeout_s, progress, topics=[settings.execution_log_topic], selector=selector
        )
        done = CatchUp(first.records + second.records, first.seconds + second.seconds)
    await compact_once(settings)  # the closed days' daily tier, as the live model's compaction folds it
    rows = await _row_counts(owner_dsn, settings.db_schema)
    result = ReplayResult(
        settings.db_schema,
        done.records,
        state.projected,
        state.dead_lettered,
        resumed_from=resumed,
        rows=rows,
        archived=tuple(archived),
        seconds=time.perf_counter() - started,
    )
    log.info("replay_done", schema=settings.db_schema, records=done.records, projected=state.projected)
    return result


_COUNTED = ("audit_entries", "audit_outcomes", "execution_logs", "dead_letters")


async def _row_counts(owner_dsn: str, schema: str) -> dict[str, int]:
    conn = await postgres.connect(owner_dsn, server_settings={"search_path": schema})
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in _COUNTED}
    finally:
        await conn.close()


__all__ = ["CatchUp", "Progress", "ReplayResult", "catch_up", "replay"]
