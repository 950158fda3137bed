"""The audit history of one entity."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from audit_query.deps import CodecDep, ReaderDep, RepositoryDep, SettingsDep
from audit_query.errors import NotFoundError
from audit_query.models import AuditFilter, AuditPage, SortOrder
from audit_query.pages import read_page
from audit_query.repository import LOG_ORDER
from audit_query.routes.audit import CursorQuery, LimitQuery

router = APIRouter(prefix="/v1/entities", tags=["entity history"])


@router.get("/{model}/{entity_id:path}/audit", response_model=AuditPage, summary="Entity-specific audit log")
async def entity_history(
    principal: ReaderDep,
    repo: RepositoryDep,
    codec: CodecDep,
    settings: SettingsDep,
    model: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$")],
    entity_id: Annotated[str, Path(min_length=1, max_length=256, description="May contain `/`.")],
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    limit: LimitQuery = None,
    cursor: CursorQuery = None,
) -> AuditPage:
    """Every action on the entity in the order the log holds them (its partition's offsets), not by clocks."""
    filters = AuditFilter(tenant=tenant, model=model, entity_id=entity_id)
    page = await read_page(
        principal,
        repo,
        codec,
        settings,
        view="entity",
        filters=filters,
        sort=LOG_ORDER,
        order=SortOrder.ASC,
        limit=limit,
        cursor=cursor,
    )
    if not page.data and cursor is None:
        raise NotFoundError(f"no audit entries for {model}/{entity_id}")
    return page
