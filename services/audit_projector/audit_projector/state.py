"""What the projector is doing now, for its health endpoints and logs."""

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(slots=True)
class BlockedPartition:
    """A partition stopped before an event newer than this projector understands."""

    offset: int
    event_type: str
    schema_version: str | None


@dataclass(slots=True)
class ProjectorState:
    """Mutable run state; only the projector's own task writes it."""

    running: bool = False
    assigned: set[tuple[str, int]] = field(default_factory=set)
    blocked: dict[tuple[str, int], BlockedPartition] = field(default_factory=dict)
    projected: int = 0
    dead_lettered: int = 0
    fenced_batches: int = 0
    last_batch_at: datetime | None = None
    last_error: str | None = None

    @property
    def ready(self) -> bool:
        """Ready while running with no partition stopped by a newer schema."""
        return self.running and not self.blocked and self.last_error is None

    def snapshot(self) -> dict[str, object]:
        """A JSON-friendly view."""
        return {
            "running": self.running,
            "ready": self.ready,
            "assigned": sorted(f"{t}/{p}" for t, p in self.assigned),
            "blocked": {
                f"{t}/{p}": {
                    "offset": b.offset,
                    "event_type": b.event_type,
                    "schema_version": b.schema_version,
                }
                for (t, p), b in sorted(self.blocked.items())
            },
            "projected": self.projected,
            "dead_lettered": self.dead_lettered,
            "fenced_batches": self.fenced_batches,
            "last_batch_at": self.last_batch_at.isoformat() if self.last_batch_at else None,
            "last_error": self.last_error,
        }

    def batch_done(self, rows: int, dead: int) -> None:
        """Count a committed batch."""
        self.projected += rows
        self.dead_lettered += dead
        self.last_batch_at = datetime.now(UTC)
