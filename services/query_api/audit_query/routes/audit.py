"""The global audit log and single entries with their execution logs."""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import TypeAdapter

from audit_query import chart, selfaudit
from audit_query.deps import CodecDep, ExporterDep, ReaderDep, RepositoryDep, SettingsDep
from audit_query.errors import BadRequestError, NotFoundError
from audit_query.export import ExportFormat, render
from audit_query.models import (
    COUNT_CAP,
    AuditEntryDetail,
    AuditEntryPublic,
    AuditFilter,
    AuditPage,
    EntryCount,
    SortField,
    SortOrder,
    Timestamp,
)
from audit_query.pages import read_page
from audit_query.search import MAX_QUERY_CHARS, parse
from audit_query.stats import ROLLUP_DIMENSIONS, TOP_DIMENSIONS, BucketSize, Dimension, StatsResponse, plan
from audit_query.zones import UTC_NAME, TimeZoneQuery, checked_zone
from audit_schemas import Action, Actor, ActorType

router = APIRouter(prefix="/v1/audit", tags=["audit log"])

LimitQuery = Annotated[int | None, Query(ge=1, le=5000, description="Page size (capped by the server's maximum).")]
CursorQuery = Annotated[str | None, Query(description="`next_cursor` of the previous page, unchanged.")]


async def view_filter(
    event: Annotated[list[Action] | None, Query(description="Action(s) to keep; repeat for several.")] = None,
    user_id: Annotated[str | None, Query(max_length=256)] = None,
    actor_type: ActorType | None = None,
    model: Annotated[str | None, Query(max_length=64)] = None,
    entity_id: Annotated[str | None, Query(max_length=256)] = None,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    correlation_id: Annotated[str | None, Query(max_length=256)] = None,
    since: Annotated[Timestamp | None, Query(description="Inclusive lower bound (ISO 8601 with offset).")] = None,
    until: Annotated[Timestamp | None, Query(description="Exclusive upper bound (ISO 8601 with offset).")] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=MAX_QUERY_CHARS,
            description="Search language, e.g. `action:approve user:alice -outcome:succeeded after:2026-01-01 "
            '"free text"` (see docs/search.md); combined with the other parameters.',
        ),
    ] = None,
) -> AuditFilter:
    """The filters of a view of the log, shared by the list, its export and its statistics."""
    if since is not None and until is not None and since >= until:
        raise BadRequestError("`since` must be earlier than `until`")
    return AuditFilter(
        tenant=tenant,
        actions=tuple(sorted(set(event or ()))),
        user_id=user_id,
        actor_type=actor_type,
        model=model,
        entity_id=entity_id,
        correlation_id=correlation_id,
        since=since,
        until=until,
        terms=parse(q) if q else (),
    )


FilterDep = Annotated[AuditFilter, Depends(view_filter)]


@router.get("", response_model=AuditPage, summary="Global audit log")
async def list_audit_entries(
    principal: ReaderDep,
    repo: RepositoryDep,
    codec: CodecDep,
    settings: SettingsDep,
    filters: FilterDep,
    sort: SortField = SortField.TIME,
    order: SortOrder = SortOrder.DESC,
    limit: LimitQuery = None,
    cursor: CursorQuery = None,
) -> Response:
    """Every entry, filtered and sorted, with keyset pagination stable under concurrent inserts."""
    page = await read_page(
        principal,
        repo,
        codec,
        settings,
        view="audit",
        filters=filters,
        sort=sort,
        order=order,
        limit=limit,
        cursor=cursor,
    )
    return page.response()


@router.get("/count", response_model=EntryCount, summary="How many entries a view holds")
async def count_audit_entries(principal: ReaderDep, repo: RepositoryDep, filters: FilterDep) -> EntryCount:
    """Exact up to 10,000; beyond, `exact` is false and the console shows "10,000+" (counting further would cost
    a scan of the whole view)."""
    counted = await repo.count_entries(principal.tenant_setting, filters, COUNT_CAP + 1)
    return EntryCount(count=min(counted, COUNT_CAP), exact=counted <= COUNT_CAP)


_STATS_HEAD: Final = TypeAdapter(dict[str, Any])


@router.get("/stats", response_model=StatsResponse, summary="Counts for dashboards")
async def audit_stats(
    principal: ReaderDep,
    repo: RepositoryDep,
    filters: FilterDep,
    group_by: Annotated[
        list[Dimension] | None,
        Query(description="Dimensions to group by (at most 2; `user` or `entity` alone, as a top-N)."),
    ] = None,
    bucket: Annotated[BucketSize, Query(description="Bucket width when grouping by `bucket` (UTC).")] = BucketSize.AUTO,
    limit: Annotated[int, Query(ge=1, le=100, description="Top-N size for `user` or `entity`.")] = 10,
    tz: TimeZoneQuery = UTC_NAME,
) -> Response:
    """How many entries the view holds over its range (`since`/`until` or `after:`/`before:`; the last day by
    default), grouped as asked: what the console's charts and external dashboards read."""
    query = plan(filters, group_by or [], bucket, limit, tz=checked_zone(tz))
    rows, total, source = await repo.stats_json(principal.tenant_setting, query)
    # The rows arrive as finished JSON (PostgreSQL builds them); only the head is encoded here, and the model
    # (StatsResponse) documents the shape without validating hundreds of rows again.
    head = {
        "since": query.since,
        "until": query.until,
        "bucket": query.bucket if Dimension.BUCKET in query.group_by else None,
        "time_zone": query.tz,
        "group_by": list(query.group_by),
        "source": source,
        "total": None if TOP_DIMENSIONS & set(query.group_by) else total,
    }
    body = _STATS_HEAD.dump_json(head)[:-1] + b',"rows":' + rows.encode() + b"}"
    return Response(body, media_type="application/json")


@router.get(
    "/chart.svg",
    summary="Entries over time as an SVG bar chart",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
)
async def audit_chart(
    principal: ReaderDep,
    repo: RepositoryDep,
    filters: FilterDep,
    stack: Annotated[
        Dimension | None, Query(description="Stack the bars by `event` or `outcome` (or any rollup dimension).")
    ] = None,
    bucket: Annotated[BucketSize, Query(description="Bucket width; `auto` picks one from the range.")] = (
        BucketSize.AUTO
    ),
    tz: TimeZoneQuery = UTC_NAME,
) -> Response:
    """The console's chart, drawn on the server: each bar carries its bucket's bounds for click-to-narrow."""
    if stack is not None and stack not in ROLLUP_DIMENSIONS - {Dimension.BUCKET}:
        raise BadRequestError("`stack` takes a dimension with few values: event, outcome, model, actor_type, tenant")
    query = plan(filters, [Dimension.BUCKET, *([stack] if stack else [])], bucket, 10, tz=checked_zone(tz))
    rows, _ = await repo.stats(principal.tenant_setting, query)
    svg = chart.render(rows, query.since, query.until, query.bucket, stack.value if stack else None, query.tz)
    return Response(svg, media_type="image/svg+xml", headers={"cache-control": "no-store"})


@router.get(
    "/export",
    summary="Export a view of the log (CSV or NDJSON)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
async def export_audit_entries(
    principal: ExporterDep,
    repo: RepositoryDep,
    settings: SettingsDep,
    filters: FilterDep,
    format: ExportFormat = ExportFormat.NDJSON,
    sort: SortField = SortField.TIME,
    order: SortOrder = SortOrder.DESC,
    tz: TimeZoneQuery = UTC_NAME,
) -> StreamingResponse:
    """Every entry of the view, streamed with flat memory; the export itself is recorded in the audit log first.
    CSV writes times in `tz` with their offset; NDJSON keeps the API's UTC form (its digest covers the entries)."""
    zone = checked_zone(tz)
    export_id = uuid.uuid4()
    description = {
        "export_id": str(export_id),
        "format": format.value,
        "filters": filters.model_dump(mode="json"),
        "sort": sort.value,
        "order": order.value,
        "time_zone": zone,
        "by": principal.name,
        "tenants": principal.tenant_setting,
        "at": datetime.now(UTC).isoformat(),
    }
    entries = repo.stream_entries(principal.tenant_setting, filters, str(sort), order)
    first = await anext(entries, None)  # the database's answer before the 200: an outage is still a 503
    start, outcome = selfaudit.events(
        Action.EXECUTE,
        "audit_export",
        str(export_id),
        Actor.user(principal.name),
        settings.self_audit_tenant,
        {"format": format.value, "filters": description["filters"], "sort": sort.value, "order": order.value},
    )
    try:
        await selfaudit.record(settings, start, outcome, timeout_s=5)  # no unrecorded export of audit data
    except BaseException:
        await entries.aclose()
        raise

    async def rows() -> AsyncIterator[AuditEntryPublic]:
        if first is not None:
            yield first
            async for entry in entries:
                yield entry

    filename = f"audit-export-{export_id}.{format.value}"
    return StreamingResponse(
        render(format, description, rows(), zone),
        media_type=format.media_type,
        headers={"content-disposition": f'attachment; filename="{filename}"', "x-audit-export-id": str(export_id)},
    )


@router.get("/{audit_id}", response_model=AuditEntryDetail, summary="One entry with its execution logs")
async def get_audit_entry(audit_id: UUID, principal: ReaderDep, repo: RepositoryDep, settings: SettingsDep) -> Response:
    """The entry, its outcome and every execution-log line of its trace, in time order."""
    found = await repo.trace_json(principal.tenant_setting, audit_id, settings.max_logs)
    if found is None:
        raise NotFoundError(f"no audit entry {audit_id}")
    body = f'{{"entry":{found.entry},"logs":{found.logs},"logs_truncated":{json.dumps(found.truncated)}}}'
    return Response(body, media_type="application/json")
