"""Dead letters: records the projector refused. They carry no tenant, so only platform administrators see them."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from audit_query.deps import AdminDep, RepositoryDep

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])


class DeadLetterPublic(BaseModel):
    """A refused record: where it sits, why, and when."""

    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    dead_lettered_at: datetime


class DeadLetterPage(BaseModel):
    """The newest dead letters first."""

    data: list[DeadLetterPublic]
    count: int


@router.get("", response_model=DeadLetterPage, summary="Dead letters (audit:admin)")
async def list_dead_letters(
    principal: AdminDep,
    repo: RepositoryDep,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLetterPage:
    """Newest first; row-level security also limits them to callers whose transaction may see every tenant."""
    rows = await repo.dead_letters(principal.tenant_setting, reason, limit)
    data = [DeadLetterPublic(**r) for r in rows]
    return DeadLetterPage(data=data, count=len(data))
