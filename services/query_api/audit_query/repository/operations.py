"""What operators read: dead letters and the projector's positions and blocks."""

from typing import Any

from audit_query.repository.reader import Reader


class OperationsQueries(Reader):
    """Dead letters and projector state."""

    async def dead_letters(self, tenants: str, reason: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest dead letters (visible only when `tenants` is `*`)."""
        rows = await self._fetch(
            """SELECT kafka_topic AS topic, kafka_partition AS partition, kafka_offset AS offset, reason, detail,
                      dead_lettered_at
                 FROM dead_letters WHERE $1::text IS NULL OR reason = $1
                ORDER BY dead_lettered_at DESC, kafka_topic, kafka_partition, kafka_offset LIMIT $2""",
            reason,
            limit,
            tenants=tenants,
        )
        return [dict(r) for r in rows]

    async def projector_positions(self, group: str) -> tuple[dict[tuple[str, int], int], list[dict[str, Any]]]:
        """Stored offsets of the projector group, and any partitions it has stopped."""
        offsets = await self._fetch(
            "SELECT topic, partition, next_offset FROM projector_offsets WHERE consumer_group = $1", group
        )
        blocks = await self._fetch(
            """SELECT topic, partition, kafka_offset, event_type, schema_version, blocked_at
                 FROM projector_blocks WHERE consumer_group = $1 ORDER BY topic, partition""",
            group,
        )
        return (
            {(r["topic"], r["partition"]): r["next_offset"] for r in offsets},
            [
                {
                    "topic": r["topic"],
                    "partition": r["partition"],
                    "offset": r["kafka_offset"],
                    "event_type": r["event_type"],
                    "schema_version": r["schema_version"],
                    "since": r["blocked_at"].isoformat(),
                }
                for r in blocks
            ],
        )
