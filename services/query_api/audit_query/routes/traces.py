"""The trace view: one action's audit entry, outcome and execution logs by trace id."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path

from audit_query.deps import ReaderDep, RepositoryDep, SettingsDep
from audit_query.errors import NotFoundError
from audit_query.models import TraceView

router = APIRouter(prefix="/v1/traces", tags=["traces"])


@router.get("/{trace_id}", response_model=TraceView, summary="Everything recorded under one trace id")
async def get_trace(
    trace_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="32 lowercase hex digits.")],
    principal: ReaderDep,
    repo: RepositoryDep,
    settings: SettingsDep,
) -> TraceView:
    """The entry and its logs; 404 until the entry is projected (lines are shown only beside their entry)."""
    audit_id = UUID(hex=trace_id)
    entry = await repo.entry(principal.tenant_setting, audit_id)
    logs, truncated = await repo.logs(principal.tenant_setting, audit_id, settings.max_logs)
    if entry is None and not logs:
        raise NotFoundError(f"nothing recorded for trace {trace_id}")
    return TraceView(trace_id=trace_id, entry=entry, logs=logs, logs_truncated=truncated)
