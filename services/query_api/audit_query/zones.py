"""Time zones the API draws buckets and writes times in: IANA names, checked against the zone database."""

import re
from datetime import datetime, timedelta
from typing import Annotated, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Query

from audit_query.errors import BadRequestError

UTC_NAME: Final = "UTC"
_NAME: Final = re.compile(r"^(?:UTC|[A-Z][A-Za-z_]+(?:/[A-Za-z0-9_+\-]+){1,2})$")

TimeZoneQuery = Annotated[
    str,
    Query(
        max_length=64,
        description="IANA time zone (e.g. `Europe/Paris`) that day and week buckets start in and times are written in;"
        " `UTC` by default.",
    ),
]


def checked_zone(name: str) -> str:
    """`name` if PostgreSQL and Python both know it as an IANA zone (a 400 otherwise)."""
    if not _NAME.fullmatch(name):
        raise BadRequestError(f"{name!r} is not an IANA time zone name such as UTC or America/Los_Angeles")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise BadRequestError(f"unknown time zone {name!r}") from e
    return name


def whole_hours(name: str, since: datetime, until: datetime) -> bool:
    """Whether the zone is a whole number of hours from UTC all through [since, until): only then does every UTC
    hour (a rollup row) fall inside one of its days."""
    zone = ZoneInfo(name)
    at = since
    while True:
        offset = at.astimezone(zone).utcoffset() or timedelta()
        if offset % timedelta(hours=1):
            return False
        if at >= until:
            return True
        at = min(at + timedelta(hours=12), until)


__all__ = ["UTC_NAME", "TimeZoneQuery", "checked_zone", "whole_hours"]
