"""Pipelines projecting in the background until halted: a replay's catch-up, or a swap's rebuild kept following the
log so that the pause only waits for what arrived since."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from audit_projector.config import Settings
from audit_projector.pipeline import Pipeline
from audit_projector.scope import Selector
from audit_projector.service import running_pipeline
from audit_projector.state import ProjectorState

Targets = dict[tuple[str, int], int]
"""Per topic partition, the offset to have projected up to."""

Progress = Callable[[int, int], None]
"""Called with (records done, records to do), several times a second."""


@dataclass(frozen=True, slots=True)
class CatchUp:
    """How many records the targets covered, and the seconds spent reaching them."""

    records: int
    seconds: float


class Following:
    """Started pipelines, one per topic, projecting until `halt`."""

    def __init__(self, pipelines: list[Pipeline]) -> None:
        self._pipelines = pipelines
        self._stop = asyncio.Event()
        self._runs = [asyncio.create_task(p.run(self._stop)) for p in pipelines]

    async def end_offsets(self) -> Targets:
        """The current end offset of every partition of the followed topics."""
        ends: Targets = {}
        for p in self._pipelines:
            ends.update(await p.end_offsets())
        return ends

    async def reach(self, targets: Targets, timeout_s: float, progress: Progress | None = None) -> CatchUp:
        """Until every partition has projected at least up to its target (or is blocked); a pipeline's error is
        raised as it happens."""
        goals = [{k: n for k, n in targets.items() if k[0] == p.topic} for p in self._pipelines]
        total = sum(sum(g.values()) for g in goals)

        def done() -> int:
            return sum(
                min(p.state.positions.get(key) or 0, end)
                for p, g in zip(self._pipelines, goals, strict=True)
                for key, end in g.items()
            )

        started = time.perf_counter()
        async with asyncio.timeout(timeout_s):
            while not all(p.caught_up(g) for p, g in zip(self._pipelines, goals, strict=True)):
                for run in self._runs:
                    if run.done():
                        await run  # surface the pipeline's error
                if progress is not None:
                    progress(done(), total)
                await asyncio.sleep(0.01)
        if progress is not None:
            progress(done(), total)
        return CatchUp(total, time.perf_counter() - started)

    async def halt(self) -> None:
        """Stop taking batches and wait for the one in flight: afterwards nothing more is written."""
        self._stop.set()
        await asyncio.gather(*self._runs, return_exceptions=True)


@contextlib.asynccontextmanager
async def following(
    settings: Settings,
    state: ProjectorState,
    topics: Sequence[str] | None = None,
    selector: Selector | None = None,
) -> AsyncIterator[Following]:
    """A pipeline per topic (all projected topics, or `topics`), running until halted or the block ends."""
    async with contextlib.AsyncExitStack() as stack:
        pipelines = [
            await stack.enter_async_context(running_pipeline(settings, state.pipeline(t), selector))
            for t in (topics or settings.topics)
        ]
        follower = Following(pipelines)
        try:
            yield follower
        finally:
            await follower.halt()


__all__ = ["CatchUp", "Following", "Progress", "Targets", "following"]
