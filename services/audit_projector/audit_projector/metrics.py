"""Prometheus metrics of the projector: counters updated as batches commit, gauges read from live state."""

import time
import weakref
from collections.abc import Iterator
from typing import Final

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from audit_projector.state import ProjectorState

EVENTS: Final = Counter(
    "audit_projector_records",
    "Records consumed, by topic and what became of them (projected, dead_lettered, duplicate, discarded).",
    ["topic", "result"],
)
DEAD_LETTERS: Final = Counter(
    "audit_projector_dead_letters", "Records dead-lettered, by topic and reason.", ["topic", "reason"]
)
BATCH_RECORDS: Final = Histogram(
    "audit_projector_batch_records",
    "Records per committed batch.",
    ["topic"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
BATCH_SECONDS: Final = Histogram(
    "audit_projector_batch_duration_seconds",
    "Time from poll to commit of a batch.",
    ["topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FENCED: Final = Counter("audit_projector_fenced_batches", "Batches rolled back by the offset fence.", ["topic"])
CHECKPOINTS: Final = Counter("audit_projector_checkpoints", "Checkpoints signed and published.", ["topic"])
LAST_CHECKPOINT: Final = Gauge(
    "audit_projector_last_checkpoint_timestamp_seconds",
    "When this projector last signed a checkpoint of the topic (Unix time): its age is the checkpoint age.",
    ["topic"],
)
WITNESS_REQUESTS: Final = Counter(
    "audit_projector_witness_requests",
    "add-checkpoint requests to each witness, by how they ended (cosigned, conflict, unavailable, ...).",
    ["witness", "result"],
)
WITNESS_REFUSALS: Final = Counter(
    "audit_projector_witness_refusals",
    "Refusals that say the log's history changed (a larger tree cosigned, another root, a proof that fails).",
    ["witness"],
)
UNWITNESSED: Final = Gauge(
    "audit_projector_unwitnessed_checkpoint_age_seconds",
    "Age of the oldest newest-checkpoint that lacks the witness quorum (0: every origin is witnessed).",
)
RESTARTS: Final = Counter(
    "audit_projector_pipeline_restarts", "Pipeline rebuilds after a lost connection or a failure.", ["topic"]
)


class _StateCollector(Collector):
    """Gauges computed at scrape time from every live projector in this process."""

    def __init__(self) -> None:
        self.states: weakref.WeakSet[ProjectorState] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "audit_projector_lag_records", "Records behind the end offset.", labels=["topic", "partition"]
        )
        since = GaugeMetricFamily(
            "audit_projector_seconds_since_last_batch",
            "Seconds since the pipeline last committed a batch or was seen caught up.",
            labels=["topic"],
        )
        blocked = GaugeMetricFamily(
            "audit_projector_blocked_partitions", "Partitions stopped before a record.", labels=["topic", "reason"]
        )
        assigned = GaugeMetricFamily("audit_projector_assigned_partitions", "Partitions owned.", labels=["topic"])
        ready = GaugeMetricFamily("audit_projector_ready", "1 while the projector is ready.")
        now = time.monotonic()
        for state in list(self.states):
            ready.add_metric([], 1.0 if state.ready else 0.0)
            for topic, p in state.pipelines.items():
                for (_, partition), value in sorted(p.lag.items()):
                    lag.add_metric([topic, str(partition)], value)
                since.add_metric([topic], now - p.last_progress)
                assigned.add_metric([topic], len(p.assigned))
                reasons: dict[str, int] = {}
                for b in p.blocked.values():
                    reasons[b.reason] = reasons.get(b.reason, 0) + 1
                for reason in ("newer_schema", "offset_out_of_range", "database_error"):
                    blocked.add_metric([topic, reason], reasons.get(reason, 0))
        yield from (lag, since, blocked, assigned, ready)


_COLLECTOR: Final = _StateCollector()
REGISTRY.register(_COLLECTOR)


def watch(state: ProjectorState) -> None:
    """Expose `state`'s gauges while it lives."""
    _COLLECTOR.states.add(state)
