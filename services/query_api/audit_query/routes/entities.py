"""The audit history of one entity."""

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel

from audit_query.cursor import Cursor, scope_of
from audit_query.deps import CodecDep, ReaderDep, RepositoryDep, SettingsDep
from audit_query.errors import NotFoundError
from audit_query.models import AuditFilter, AuditPage, EntityLogPage, SortOrder
from audit_query.pages import read_page
from audit_query.repository import LOG_ORDER
from audit_query.routes.audit import CursorQuery, LimitQuery

router = APIRouter(prefix="/v1/entities", tags=["entity history"])

ModelPath = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
EntityIdPath = Annotated[str, Path(min_length=1, max_length=256, description="May contain `/`.")]
TenantQuery = Annotated[str | None, Query(max_length=64, description="Only this tenant's entity of that id.")]


class EntityRef(BaseModel):
    """An entity that appears in the log."""

    model: str
    entity_id: str


class EntityList(BaseModel):
    """A page of entities; pass `next_after` and `next_after_model` back as `after` and `after_model`."""

    data: list[EntityRef]
    next_after: str | None
    next_after_model: str | None


class ModelCount(BaseModel):
    """An entity model and how many entries it has."""

    model: str
    entries: int


@router.get("", response_model=EntityList, summary="Entities in the log, by id prefix")
async def list_entities(
    principal: ReaderDep,
    repo: RepositoryDep,
    model: Annotated[str | None, Query(max_length=64)] = None,
    prefix: Annotated[str, Query(max_length=256, description="Start of the entity id.")] = "",
    after: Annotated[str | None, Query(max_length=256, description="`next_after` of the previous page.")] = None,
    after_model: Annotated[str, Query(max_length=64, description="`next_after_model` of the previous page.")] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> EntityList:
    """Browse entities: any entity in the log can be reached from here."""
    position = (after, after_model) if after is not None else None
    found = await repo.entities(principal.tenant_setting, model, prefix, position, limit + 1)
    page, more = found[:limit], len(found) > limit
    return EntityList(
        data=[EntityRef(model=m, entity_id=e) for m, e in page],
        next_after=page[-1][1] if more else None,
        next_after_model=page[-1][0] if more else None,
    )


@router.get("/models", response_model=list[ModelCount], summary="Entity models in the log")
async def list_models(principal: ReaderDep, repo: RepositoryDep) -> list[ModelCount]:
    """Each model with its number of entries."""
    return [ModelCount(model=m, entries=n) for m, n in await repo.models(principal.tenant_setting)]


@router.get("/{model}/{entity_id:path}/audit", response_model=AuditPage, summary="Entity-specific audit log")
async def entity_history(
    principal: ReaderDep,
    repo: RepositoryDep,
    codec: CodecDep,
    settings: SettingsDep,
    model: ModelPath,
    entity_id: EntityIdPath,
    tenant: TenantQuery = None,
    limit: LimitQuery = None,
    cursor: CursorQuery = None,
) -> Response:
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
    if not page.count and cursor is None:
        raise NotFoundError(f"no audit entries for {model}/{entity_id}")
    return page.response()


LevelName = Literal["debug", "info", "warning", "error", "critical"]


@router.get(
    "/{model}/{entity_id:path}/logs", response_model=EntityLogPage, summary="Execution logs of an entity's actions"
)
async def entity_logs(
    principal: ReaderDep,
    repo: RepositoryDep,
    codec: CodecDep,
    model: ModelPath,
    entity_id: EntityIdPath,
    tenant: TenantQuery = None,
    level: Annotated[
        list[LevelName] | None, Query(description="Only lines at these levels (repeat the parameter for several).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: CursorQuery = None,
) -> EntityLogPage:
    """Every execution-log line written under any of the entity's actions, newest first, each with the trace
    (audit id) and event it belongs to; an entity without lines gives an empty page."""
    levels = sorted(set(level or ()))
    scope = scope_of(
        view="entity-logs", model=model, entity=entity_id, tenant=tenant, levels=levels,
        tenants=principal.tenant_setting,
    )  # fmt: skip
    before = codec.decode(cursor, scope).key if cursor else None
    lines = await repo.entity_logs(principal.tenant_setting, model, entity_id, tenant, levels, limit + 1, before)
    page = lines[:limit]
    following = None
    if len(lines) > limit:
        last = page[-1]
        following = codec.encode(Cursor(scope, (last.time.isoformat(), str(last.log_id))))
    return EntityLogPage(data=page, next_cursor=following)
