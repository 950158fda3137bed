"""The dashboard API's request: dimensions, bucket sizes, the time range and the limits that keep it cheap."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from audit_query.errors import BadRequestError
from audit_query.models import AuditFilter


class Dimension(StrEnum):
    """What counts may be grouped by."""

    BUCKET = "bucket"
    EVENT = "event"
    OUTCOME = "outcome"
    MODEL = "model"
    ACTOR_TYPE = "actor_type"
    TENANT = "tenant"
    USER = "user"
    ENTITY = "entity"


class BucketSize(StrEnum):
    """Width of a time bucket (days and weeks in the request's time zone, UTC by default); `auto` picks one from
    the range."""

    AUTO = "auto"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"


TOP_DIMENSIONS: Final = frozenset({Dimension.USER, Dimension.ENTITY})
"""High-cardinality dimensions: asked for alone, answered as a top-N."""

ROLLUP_DIMENSIONS: Final = frozenset(Dimension) - TOP_DIMENSIONS
"""Dimensions the per-hour rollups carry (the others are counted from the entries)."""

MAX_RANGE: Final = timedelta(days=400)
MAX_BUCKETS: Final = 2000
MAX_DIMENSIONS: Final = 2
DEFAULT_RANGE: Final = timedelta(days=1)
BUCKET_WIDTH: Final = {
    BucketSize.HOUR: timedelta(hours=1),
    BucketSize.DAY: timedelta(days=1),
    BucketSize.WEEK: timedelta(days=7),
}


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """A validated stats request: the range is half-open [since, until)."""

    filters: AuditFilter
    since: datetime
    until: datetime
    group_by: tuple[Dimension, ...]
    bucket: BucketSize
    limit: int
    tz: str = "UTC"
    """The IANA zone whose days and weeks the buckets are (hour buckets are the same in any whole-hour zone)."""


class StatsResponse(BaseModel):
    """Counts of entries for a view of the log, grouped as asked."""

    model_config = ConfigDict(frozen=True)

    since: datetime
    until: datetime
    bucket: BucketSize | None = Field(
        description="Bucket width, when grouped by bucket (days in `time_zone`, weeks start Monday)."
    )
    time_zone: str = Field(description="The IANA zone the day and week buckets start in.")
    group_by: list[Dimension]
    source: str = Field(description="`rollups`, `entries`, or both (rollups for whole hours, entries for the edges).")
    total: int | None = Field(description="Entries in the view over the range (null for a top-N).")
    rows: list[dict[str, Any]] = Field(description="One object per group: its dimensions' values and `count`.")


def plan(
    filters: AuditFilter,
    group_by: list[Dimension],
    bucket: BucketSize,
    limit: int,
    now: datetime | None = None,
    tz: str = "UTC",
) -> StatsQuery:
    """Validate and complete a request; BadRequestError (400) says which limit it broke."""
    dims = tuple(dict.fromkeys(group_by))
    if len(dims) > MAX_DIMENSIONS:
        raise BadRequestError(f"group by at most {MAX_DIMENSIONS} dimensions, not {len(dims)}")
    if TOP_DIMENSIONS & set(dims) and len(dims) > 1:
        raise BadRequestError("`user` and `entity` are grouped alone (they answer a top-N)")
    since, until = _range(filters, now or datetime.now(UTC))
    if until - since > MAX_RANGE:
        raise BadRequestError(f"the range may span at most {MAX_RANGE.days} days")
    if Dimension.BUCKET in dims:
        if bucket is BucketSize.AUTO:
            span = until - since
            bucket = BucketSize.HOUR if span <= timedelta(days=2) else BucketSize.DAY
            bucket = BucketSize.WEEK if span > timedelta(days=120) else bucket
        buckets = (until - since) / BUCKET_WIDTH[bucket]
        if buckets > MAX_BUCKETS:
            raise BadRequestError(
                f"{int(buckets)} {bucket.value} buckets: at most {MAX_BUCKETS}; choose a wider bucket"
            )
    return StatsQuery(filters, since, until, dims, bucket, limit, tz)


def _range(filters: AuditFilter, now: datetime) -> tuple[datetime, datetime]:
    """The range from `since`/`until` and `after:`/`before:` (the narrower wins); the last day by default."""
    lows = [filters.since] if filters.since else []
    highs = [filters.until] if filters.until else []
    for term in filters.terms:
        if term.field == "after":
            lows.append(datetime.fromisoformat(term.values[0]))
        elif term.field == "before":
            highs.append(datetime.fromisoformat(term.values[0]))
    until = min(highs) if highs else now
    since = max(lows) if lows else until - DEFAULT_RANGE
    if since >= until:
        raise BadRequestError("the range is empty: its start must be earlier than its end")
    return since, until


__all__ = ["BUCKET_WIDTH", "BucketSize", "Dimension", "StatsQuery", "StatsResponse", "plan"]
