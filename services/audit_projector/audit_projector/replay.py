"""Rebuild a read model from offset 0 into a fresh schema, then stop once it has caught up."""

import asyncio
import contextlib
import time
from dataclasses import dataclass

import structlog

from audit_projector.config import Settings
from audit_projector.service import compact_once, prepare, running_pipeline
from audit_projector.state import ProjectorState

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay read and wrote."""

    schema: str
    records: int
    projected: int
    dead_lettered: int


@dataclass(frozen=True, slots=True)
class CatchUp:
    """How many records the end offsets covered, and the seconds spent projecting them (after start-up)."""

    records: int
    seconds: float


async def catch_up(settings: Settings, state: ProjectorState, timeout_s: float) -> CatchUp:
    """Run a pipeline per topic until each has projected up to the end offsets seen at its start."""
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        pipelines = [
            await stack.enter_async_context(running_pipeline(settings, state.pipeline(t))) for t in settings.topics
        ]
        targets = [await p.end_offsets() for p in pipelines]
        started = time.perf_counter()
        runs = [asyncio.create_task(p.run(stop)) for p in pipelines]
        try:
            async with asyncio.timeout(timeout_s):
                while not all(p.caught_up(t) for p, t in zip(pipelines, targets, strict=True)):
                    for run in runs:
                        if run.done():
                            await run  # surface the pipeline's error
                    await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            stop.set()
            await asyncio.gather(*runs, return_exceptions=True)
    return CatchUp(sum(sum(t.values()) for t in targets), elapsed)


async def replay(settings: Settings, owner_dsn: str, timeout_s: float) -> ReplayResult:
    """Project every record up to the end offsets seen at start into `settings.db_schema`."""
    await prepare(settings.model_copy(update={"migrations_database_url": owner_dsn}))
    state = ProjectorState()
    done = await catch_up(settings, state, timeout_s)
    await compact_once(settings)  # the closed days' daily tier, as the live model's compaction folds it
    log.info("replay_done", schema=settings.db_schema, records=done.records, projected=state.projected)
    return ReplayResult(settings.db_schema, done.records, state.projected, state.dead_lettered)


__all__ = ["CatchUp", "ReplayResult", "catch_up", "replay"]
