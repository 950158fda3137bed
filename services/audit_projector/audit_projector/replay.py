"""Rebuild a read model from offset 0 into a fresh schema, then stop once it has caught up."""

import asyncio
from dataclasses import dataclass

import structlog

from audit_projector.config import Settings
from audit_projector.service import prepare, running_projector
from audit_projector.state import ProjectorState

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay read and wrote."""

    schema: str
    records: int
    projected: int
    dead_lettered: int


async def replay(settings: Settings, owner_dsn: str, timeout_s: float) -> ReplayResult:
    """Project every record up to the end offsets seen at start into `settings.db_schema`."""
    await prepare(settings.model_copy(update={"migrations_database_url": owner_dsn}))
    state = ProjectorState()
    stop = asyncio.Event()
    async with running_projector(settings, state) as projector:
        targets = await projector.end_offsets()
        total = sum(targets.values())
        run = asyncio.create_task(projector.run(stop))
        try:
            async with asyncio.timeout(timeout_s):
                while not projector.caught_up(targets):
                    if run.done():
                        await run  # surface the projector's error
                    await asyncio.sleep(0.2)
        finally:
            stop.set()
            await run
    log.info("replay_done", schema=settings.db_schema, records=total, projected=state.projected)
    return ReplayResult(settings.db_schema, total, state.projected, state.dead_lettered)


__all__ = ["ReplayResult", "replay"]
