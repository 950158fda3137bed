"""The audit history of one entity."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from audit_query.cursor import Cursor, scope_of
from audit_query.deps import CodecDep, RepositoryDep, SettingsDep
from audit_query.errors import NotFoundError
from audit_query.models import AuditPage
from audit_query.routes.audit import CursorQuery, LimitQuery

router = APIRouter(prefix="/v1/entities", tags=["entity history"])


@router.get("/{model}/{entity_id}/audit", response_model=AuditPage, summary="Entity-specific audit log")
async def entity_history(
    repo: RepositoryDep,
    codec: CodecDep,
    settings: SettingsDep,
    model: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$")],
    entity_id: Annotated[str, Path(min_length=1, max_length=256)],
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    limit: LimitQuery = None,
    cursor: CursorQuery = None,
) -> AuditPage:
    """Every action on the entity, oldest first, so revisions read in order."""
    scope = scope_of(view="entity", model=model, entity_id=entity_id, tenant=tenant)
    after = codec.decode(cursor, scope).key if cursor else None
    size = min(limit or settings.default_limit, settings.max_limit)
    rows = await repo.entity_history(tenant, model, entity_id, size, after)
    if not rows and after is None:
        raise NotFoundError(f"no audit entries for {model}/{entity_id}")
    page, more = rows[:size], len(rows) > size
    next_cursor = codec.encode(Cursor(scope, page[-1].sort_values)) if more else None
    return AuditPage(data=[r.entry for r in page], count=len(page), next_cursor=next_cursor)
