"""What the projector is doing now, for its health endpoints, metrics and logs."""

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

Key = tuple[str, int]


@dataclass(slots=True)
class BlockedPartition:
    """A partition stopped before a record, and why."""

    offset: int
    reason: str
    """newer_schema, offset_out_of_range or database_error."""
    detail: str | None = None
    event_type: str | None = None
    schema_version: str | None = None
    retry_at: float | None = None
    """Monotonic time at which a database_error block is tried again by itself."""


@dataclass(slots=True)
class PipelineState:
    """One topic's pipeline; only that pipeline's task writes it."""

    topic: str
    running: bool = False
    assigned: set[Key] = field(default_factory=set)
    positions: dict[Key, int | None] = field(default_factory=dict)
    """Stored next offset of each assigned partition whose position was loaded (None: nothing stored)."""
    blocked: dict[Key, BlockedPartition] = field(default_factory=dict)
    lag: dict[Key, int] = field(default_factory=dict)
    projected: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    discarded: int = 0
    """Records fetched below the stored offset (before a seek applied) and dropped unprojected."""
    fenced_batches: int = 0
    restarts: int = 0
    last_batch_at: datetime | None = None
    last_progress: float = field(default_factory=time.monotonic)
    """Monotonic time of the last committed batch, or of the last time the pipeline was seen caught up."""
    last_probe_ok: float | None = None
    """Monotonic time the broker last answered an end-offset probe."""
    last_error: str | None = None

    @property
    def unprojected(self) -> set[Key]:
        """Assigned partitions whose stored position could not be loaded: nothing is projected from them."""
        return self.assigned - set(self.positions)

    def stuck(self, stall_after_s: float, now: float) -> str | None:
        """Why the pipeline is not keeping up, or None."""
        if not self.running:
            return self.last_error or "not running"
        if self.unprojected:
            return f"assigned but not projected: {sorted(self.unprojected)}"
        if self.last_probe_ok is None or now - self.last_probe_ok > stall_after_s:
            return "the broker has not answered recently"
        lag = sum(self.lag.values())
        if lag > 0 and now - self.last_progress > stall_after_s:
            return f"{lag} records behind and no batch for {now - self.last_progress:.0f}s"
        return None

    def batch_done(self, rows: int, dead: int, duplicates: int) -> None:
        """Count a committed batch."""
        self.projected += rows
        self.dead_lettered += dead
        self.duplicates += duplicates
        self.last_batch_at = datetime.now(UTC)
        self.last_progress = time.monotonic()

    def snapshot(self, stall_after_s: float) -> dict[str, object]:
        """A JSON-friendly view."""
        now = time.monotonic()
        return {
            "running": self.running,
            "stuck": self.stuck(stall_after_s, now),
            "assigned": sorted(f"{t}/{p}" for t, p in self.assigned),
            "unprojected": sorted(f"{t}/{p}" for t, p in self.unprojected),
            "blocked": {
                f"{t}/{p}": {
                    "offset": b.offset,
                    "reason": b.reason,
                    "detail": b.detail,
                    "event_type": b.event_type,
                    "schema_version": b.schema_version,
                }
                for (t, p), b in sorted(self.blocked.items())
            },
            "lag": sum(self.lag.values()),
            "projected": self.projected,
            "dead_lettered": self.dead_lettered,
            "duplicates": self.duplicates,
            "discarded_below_offset": self.discarded,
            "fenced_batches": self.fenced_batches,
            "restarts": self.restarts,
            "last_batch_at": self.last_batch_at.isoformat() if self.last_batch_at else None,
            "seconds_since_progress": round(now - self.last_progress, 1),
            "last_error": self.last_error,
        }


@dataclass(slots=True, eq=False, weakref_slot=True)
class ProjectorState:
    """The process: its pipelines, and whether its supervisor still runs."""

    pipelines: dict[str, PipelineState] = field(default_factory=dict)
    alive: bool = True
    """False once the process is stopping or has given up (a non-retriable error)."""
    stall_after_s: float = 60.0
    unwitnessed: list[str] = field(default_factory=list)
    """Origins whose newest checkpoint has lacked the witness quorum for longer than the grace period."""

    def pipeline(self, topic: str) -> PipelineState:
        """The state of `topic`'s pipeline, created on first use."""
        return self.pipelines.setdefault(topic, PipelineState(topic))

    @property
    def running(self) -> bool:
        """Every pipeline runs."""
        return bool(self.pipelines) and all(p.running for p in self.pipelines.values())

    @property
    def blocked(self) -> dict[Key, BlockedPartition]:
        """Blocked partitions of every pipeline."""
        return {k: b for p in self.pipelines.values() for k, b in p.blocked.items()}

    @property
    def projected(self) -> int:
        return sum(p.projected for p in self.pipelines.values())

    @property
    def dead_lettered(self) -> int:
        return sum(p.dead_lettered for p in self.pipelines.values())

    def problems(self) -> list[str]:
        """Why the projector is not ready: stopped or stuck pipelines, blocked partitions."""
        now = time.monotonic()
        found = [f"{p.topic}: {why}" for p in self.pipelines.values() if (why := p.stuck(self.stall_after_s, now))]
        found += [f"{t}/{part}: blocked ({b.reason})" for (t, part), b in sorted(self.blocked.items())]
        found += [f"{origin}: the newest checkpoint lacks its witness cosignatures" for origin in self.unwitnessed]
        return found if self.pipelines else ["starting"]

    @property
    def ready(self) -> bool:
        """Ready while every pipeline projects and keeps up, with no partition blocked."""
        return self.alive and not self.problems()

    def snapshot(self) -> dict[str, object]:
        """A JSON-friendly view."""
        pipelines = {t: p.snapshot(self.stall_after_s) for t, p in sorted(self.pipelines.items())}
        return {
            "alive": self.alive,
            "ready": self.ready,
            "problems": self.problems(),
            "projected": self.projected,
            "dead_lettered": self.dead_lettered,
            "blocked": {k: v for p in pipelines.values() for k, v in p["blocked"].items()},  # type: ignore[attr-defined]
            "pipelines": pipelines,
        }
