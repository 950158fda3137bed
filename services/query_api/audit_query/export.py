"""Export formats of a filtered audit view: CSV for spreadsheets, NDJSON with a verifiable trailer.

Both start with the export's description (filters, query, sort, who, when). CSV cells that a spreadsheet would
run as a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) are prefixed with `'`. NDJSON ends
with a trailer record holding the row count and the SHA-256 of every byte before the trailer line, so a
truncated or altered download is detectable; an export that fails midway ends with an `error` record instead.
"""

import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo

from audit_query.errors import QueryError
from audit_query.models import AuditEntryPublic

CSV_COLUMNS: Final = (
    "time",
    "user",
    "user_name",
    "user_type",
    "event",
    "entity_id",
    "model",
    "audit_id",
    "outcome",
    "tenant",
    "source",
    "correlation_id",
    "error",
)
"""The console's table columns first (Time, User, Event, Entity ID, Model, Audit Log ID, Outcome), then more."""

_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


class ExportFormat(StrEnum):
    """What `/v1/audit/export` writes."""

    CSV = "csv"
    NDJSON = "ndjson"

    @property
    def media_type(self) -> str:
        return "text/csv; charset=utf-8" if self is ExportFormat.CSV else "application/x-ndjson"


def safe_cell(value: str | None) -> str:
    """A cell a spreadsheet shows as text: a leading formula character is neutralised with `'`."""
    text = "" if value is None else value
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _csv_line(cells: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue().encode()


def _csv_row(entry: AuditEntryPublic, zone: ZoneInfo) -> list[str]:
    error = entry.outcome.error
    values = [
        entry.time.astimezone(zone).isoformat(),
        entry.user.id,
        entry.user.display_name,
        entry.user.type.value,
        entry.event.value,
        entry.entity.id,
        entry.entity.model,
        str(entry.audit_id),
        entry.outcome.status,
        entry.tenant_id,
        entry.source,
        entry.correlation_id,
        f"{error.type}: {error.message}" if error else None,
    ]
    return [safe_cell(_shown(v)) for v in values]


def _shown(value: str | dict[str, bool] | None) -> str | None:
    """A personal value whose subject was erased reads "erased" in a spreadsheet."""
    return "erased" if isinstance(value, dict) else value


async def render(
    fmt: ExportFormat, description: dict[str, Any], entries: AsyncIterator[AuditEntryPublic], tz: str = "UTC"
) -> AsyncIterator[bytes]:
    """The export's bytes, a few rows at a time; CSV times in `tz`, with their offset."""
    zone = ZoneInfo(tz)
    digest = hashlib.sha256()
    count = 0
    if fmt is ExportFormat.CSV:
        yield _csv_line([safe_cell("# audit export " + json.dumps(description, sort_keys=True))])
        yield _csv_line(list(CSV_COLUMNS))
    else:
        head = _ndjson({"type": "export", **description})
        digest.update(head)
        yield head
    chunk: list[bytes] = []
    try:
        async for entry in entries:
            count += 1
            if fmt is ExportFormat.CSV:
                line = _csv_line(_csv_row(entry, zone))
            else:
                line = _ndjson({"type": "entry", **entry.model_dump(mode="json")})
                digest.update(line)
            chunk.append(line)
            if len(chunk) >= 200:
                yield b"".join(chunk)
                chunk = []
    except QueryError as e:  # the stream has begun: say so in-band, and leave the trailer out
        yield b"".join(chunk)
        if fmt is ExportFormat.NDJSON:
            yield _ndjson({"type": "error", "after_rows": count, "detail": str(e)})
        else:
            yield _csv_line([safe_cell(f"# export failed after {count} rows: {e}")])
        return
    yield b"".join(chunk)
    if fmt is ExportFormat.NDJSON:
        yield _ndjson({"type": "trailer", "count": count, "sha256": digest.hexdigest()})


def _ndjson(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


__all__ = ["CSV_COLUMNS", "ExportFormat", "render", "safe_cell"]
