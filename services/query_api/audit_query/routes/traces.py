"""The trace view: one action's audit entry, outcome and execution logs by trace id."""

import json
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from audit_query.cursor import Cursor, scope_of
from audit_query.deps import CodecDep, ReaderDep, RepositoryDep, SettingsDep, StreamsDep
from audit_query.errors import NotFoundError
from audit_query.live import events, positions_of, recorded, stream_scope
from audit_query.models import TraceView
from audit_query.repository import check_log_key

router = APIRouter(prefix="/v1/traces", tags=["traces"])

TraceIdPath = Annotated[
    str,
    Path(
        pattern=r"^(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
        description="The action's audit id: 32 lowercase hex digits, or the same id in its dashed UUID form.",
    ),
]


def _hex(trace_id: str) -> str:
    """Both spellings of a trace id as the 32 hex digits the log lines carry."""
    return trace_id.replace("-", "")


@router.get("/{trace_id}", response_model=TraceView, summary="Everything recorded under one trace id")
async def get_trace(
    trace_id: TraceIdPath,
    principal: ReaderDep,
    repo: RepositoryDep,
    settings: SettingsDep,
    codec: CodecDep,
    logs_limit: Annotated[
        int | None, Query(ge=1, le=100_000, description="Log lines per page (capped by the server's maximum).")
    ] = None,
    logs_after: Annotated[str | None, Query(description="`logs_next` of the previous page, unchanged.")] = None,
) -> Response:
    """The entry and a page of its logs in time order (`logs_next` continues it); 404 until the entry is
    projected (lines are shown only beside their entry)."""
    trace_id = _hex(trace_id)
    audit_id = UUID(hex=trace_id)
    scope = scope_of(view="trace-logs", trace=trace_id, tenants=principal.tenant_setting)
    after = codec.decode(logs_after, scope).key if logs_after else None
    if after is not None:
        check_log_key(after)
    size = min(logs_limit or settings.trace_page, settings.max_logs)
    trace = await repo.trace_json(principal.tenant_setting, audit_id, size, after)
    if trace is None:  # lines are shown only beside their entry
        raise NotFoundError(f"nothing recorded for trace {trace_id}")
    following = codec.encode(Cursor(scope, trace.last)) if trace.truncated and trace.last is not None else None
    body = (
        f'{{"trace_id":"{trace_id}","entry":{trace.entry},"logs":{trace.logs},'
        f'"logs_truncated":{json.dumps(trace.truncated)},'
        f'"logs_next":{json.dumps(following)}}}'
    )
    return Response(body, media_type="application/json")


@router.get(
    "/{trace_id}/stream",
    summary="Follow a trace live (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_trace(
    trace_id: TraceIdPath,
    request: Request,
    principal: ReaderDep,
    repo: RepositoryDep,
    codec: CodecDep,
    settings: SettingsDep,
    streams: StreamsDep,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="The id of the last event received, to resume after.")
    ] = None,
) -> StreamingResponse:
    """The entry, then each log line and the outcome as they are projected, then `end`. Event ids are signed
    positions in the log: reconnecting with `Last-Event-ID` resumes with no line lost or repeated. A browser
    authenticates with its session cookie (EventSource cannot send headers).

    404 when nothing is recorded under the id for the caller's tenants within a short grace period (a trace that
    is just starting); 429 with `Retry-After` when the credential already holds its share of open streams."""
    trace_id = _hex(trace_id)
    scope = stream_scope(trace_id, principal.tenant_setting)
    positions = positions_of(codec, last_event_id, scope)
    slot = streams.acquire(principal)
    try:
        if not positions and not await recorded(repo, principal.tenant_setting, trace_id, settings.live_grace_s):
            raise NotFoundError(f"nothing recorded for trace {trace_id}")
    except BaseException:
        slot.release()
        raise
    stream = events(
        repo,
        codec,
        tenants=principal.tenant_setting,
        trace_id=trace_id,
        scope=scope,
        positions=positions,
        disconnected=request.is_disconnected,
    )
    return StreamingResponse(
        slot.holding(stream),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
